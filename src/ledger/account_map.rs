//! The ledger's accounts: found by their id's hash, listed in id order.
//!
//! An entry of 8,000 transfers looks each transfer's two accounts up a few
//! times. In an ordered map over 10,000 accounts each look-up compared
//! about 14 ids, each behind a pointer of its own: a tenth of a replica's
//! time applying. Lists (the API's pages of accounts, the checks that walk
//! them) keep id order from a set of the ids, which changes only when an
//! account is opened.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::{Bound, Index};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Account, AccountId};

/// The hasher of maps keyed by ids: ids are chosen by members, so their
/// hashes are seeded, at random per process.
pub type Seeded = foldhash::quality::RandomState;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountMap {
    by_id: HashMap<AccountId, Account, Seeded>,
    order: BTreeSet<AccountId>,
}

impl AccountMap {
    pub fn get(&self, id: &AccountId) -> Option<&Account> {
        self.by_id.get(id)
    }

    pub fn get_mut(&mut self, id: &AccountId) -> Option<&mut Account> {
        self.by_id.get_mut(id)
    }

    pub fn contains_key(&self, id: &AccountId) -> bool {
        self.by_id.contains_key(id)
    }

    /// Puts `account` under `id`, in place of any account there.
    pub fn insert(&mut self, id: AccountId, account: Account) {
        if self.by_id.insert(id.clone(), account).is_none() {
            self.order.insert(id);
        }
    }

    /// Every account, in id order.
    pub fn values(&self) -> impl Iterator<Item = &Account> {
        self.after(None)
    }

    /// The accounts with ids after `after`, in id order.
    pub fn after(&self, after: Option<&AccountId>) -> impl Iterator<Item = &Account> {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        (self.order.range((start, Bound::Unbounded))).map(|id| &self.by_id[id])
    }
}

impl Index<&AccountId> for AccountMap {
    type Output = Account;
    fn index(&self, id: &AccountId) -> &Account {
        &self.by_id[id]
    }
}

impl FromIterator<(AccountId, Account)> for AccountMap {
    fn from_iter<I: IntoIterator<Item = (AccountId, Account)>>(accounts: I) -> Self {
        let mut map = Self::default();
        for (id, account) in accounts {
            map.insert(id, account);
        }
        map
    }
}

/// As a map in id order, so equal ledgers serialize alike.
impl Serialize for AccountMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.order.iter().map(|id| (id, &self.by_id[id])))
    }
}

impl<'de> Deserialize<'de> for AccountMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<AccountId, Account>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(id: &str) -> Account {
        Account {
            history_len: id.len() as u64,
            ..Account::for_test(id)
        }
    }

    #[test]
    fn lists_in_id_order_whatever_the_order_of_opening() {
        let ids = ["b", "a9", "c", "a10", "a"];
        let mut map = AccountMap::default();
        for id in ids {
            let id = AccountId::parse(id).unwrap();
            map.insert(id.clone(), account(id.as_str()));
        }
        let listed: Vec<&str> = map.values().map(|a| a.id.as_str()).collect();
        assert_eq!(listed, ["a", "a10", "a9", "b", "c"]);
        let a10 = AccountId::parse("a10").unwrap();
        let after: Vec<&str> = map.after(Some(&a10)).map(|a| a.id.as_str()).collect();
        assert_eq!(after, ["a9", "b", "c"]);
        // Replacing an account keeps one entry for its id.
        let mut changed = map[&a10].clone();
        changed.history_len = 99;
        map.insert(a10.clone(), changed);
        assert_eq!(map.values().count(), 5);
        assert_eq!(map[&a10].history_len, 99);
    }

    #[test]
    fn serializes_as_the_map_in_id_order() {
        let ids = ["c", "a", "b"];
        let map: AccountMap = ids
            .iter()
            .map(|id| (AccountId::parse(id).unwrap(), account(id)))
            .collect();
        let ordered: BTreeMap<AccountId, Account> = ids
            .iter()
            .map(|id| (AccountId::parse(id).unwrap(), account(id)))
            .collect();
        let bytes = crate::codec::encode(&map);
        assert_eq!(bytes, crate::codec::encode(&ordered));
        let back: AccountMap = crate::codec::decode(&bytes).unwrap();
        assert_eq!(back, map);
    }
}

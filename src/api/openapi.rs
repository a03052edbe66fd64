//! The API's OpenAPI 3.1 description: every `/v1` route with its
//! parameters, body, answer and error statuses, the schemas taken from the
//! request and answer types themselves. A node serves it at
//! `GET /v1/openapi.json` with its own limits; `alliance openapi` prints it
//! with the defaults.

use std::collections::BTreeMap;

use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{
    AnyOfBuilder, ComponentsBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Ref, Schema,
    SchemaFormat, Type,
};
use utoipa::openapi::security::{SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathItem, PathsBuilder, RefOr, Required,
    ResponseBuilder,
};
use utoipa::{PartialSchema, ToSchema};

use super::body::{BatchBody, CreateAccountBody, EmptyBody, PostBody, ReadersBody, TransferBody};
use super::error::{ApiError, NOT_FOUND};
use super::gov::{
    ActionBody, BallotBody, Joined, ProposalView, ProposalsPage, RegistryView, RevocationView,
    RevokeBody,
};
use super::views::{
    AccountView, AccountsPage, BalanceAtView, BatchAll, BatchRefused, BlockRead, BlocksPage,
    ClusterView, ErrorBody, HistoryPage, ProofView, TransferRead,
};
use crate::config::Limits;
use crate::ledger::{AccountId, Rejection, TransferId};

/// The statuses every `/v1` route may answer besides its success: a bad
/// parameter, a certificate that is not a member's or was revoked, a
/// missing object, no leader or a node that cannot serve, no answer in time.
const READ_ERRORS: &[(u16, &str)] = &[
    (400, "a parameter or query breaks its rule"),
    (401, "the certificate is not a member identity"),
    (
        403,
        "the caller's role or organization may not do this, or its certificate was revoked",
    ),
    (
        404,
        "no such object or route, or not visible to the caller's organization",
    ),
    (503, "no leader reachable, or this node cannot serve now"),
    (504, "no answer before the request deadline"),
];

/// What a write may answer besides the read errors.
const WRITE_ERRORS: &[(u16, &str)] = &[
    (408, "the body did not arrive in time"),
    (
        409,
        "the id exists with other fields, or the object's state forbids this",
    ),
    (
        413,
        "the body is larger than the node's `limits.body_bytes_max`",
    ),
    (415, "the body is not declared as JSON"),
    (422, "the ledger refused the command"),
    (
        429,
        "too many writes in flight on this node, or your organization's request bodies on it \
         hold its `limits.body_bytes_in_flight_max`",
    ),
];

/// The errors of the edge (not the ledger's rejections), one of each code,
/// so that each status's description lists the codes it carries.
fn edge_errors() -> Vec<ApiError> {
    let text = String::new;
    let mut errors = vec![
        ApiError::MalformedJson(text()),
        ApiError::InvalidQuery(text()),
        ApiError::BodyTooLarge(0),
        ApiError::NotJson,
        ApiError::BodyTimeout,
        ApiError::Unauthenticated(text()),
        ApiError::InvalidSignature(text()),
        ApiError::Revoked,
        ApiError::Forbidden(""),
        ApiError::SignOrUseOwnNode(text()),
        ApiError::Overloaded,
        ApiError::NoQuorum,
        ApiError::OutcomeUnknown,
        ApiError::Unavailable(text()),
        ApiError::Diverged(text()),
    ];
    errors.extend(NOT_FOUND.iter().map(|(code, _)| ApiError::NotFound(code)));
    errors.extend(Rejection::ALL.iter().map(|r| ApiError::Rejected(*r)));
    errors
}

/// The error answers: the body every error has, and what each status
/// means with the codes it carries, made once for the document.
struct Errors {
    body: RefOr<Schema>,
    described: BTreeMap<u16, String>,
}

impl Errors {
    fn new(schemas: &mut Schemas) -> Self {
        let all = edge_errors();
        let describe = |(status, what): &(u16, &str)| {
            let mut codes: Vec<&str> = all
                .iter()
                .filter(|e| e.status().as_u16() == *status)
                .map(ApiError::code)
                .collect();
            codes.sort_unstable();
            codes.dedup();
            match status {
                400 => codes.push("invalid_* (a field breaks its rule; the message says which)"),
                422 => codes.push("batch_rejected"),
                _ => {}
            }
            (*status, format!("{what}; codes: {}", codes.join(", ")))
        };
        Self {
            body: schemas.of::<ErrorBody>(),
            described: READ_ERRORS
                .iter()
                .chain(WRITE_ERRORS)
                .map(describe)
                .collect(),
        }
    }

    /// `op` with the error answers of `statuses`; a 422 may also carry
    /// `refusal`.
    fn answered(
        &self,
        mut op: OperationBuilder,
        statuses: &[(u16, &str)],
        refusal: Option<&RefOr<Schema>>,
    ) -> OperationBuilder {
        for (status, _) in statuses {
            let schema = match (refusal, status) {
                (Some(refusal), 422) => any_of([self.body.clone(), refusal.clone()]),
                _ => self.body.clone(),
            };
            op = op.response(
                status.to_string(),
                json_response(&self.described[status], schema),
            );
        }
        op
    }
}

/// The schemas a document names, with those they name (the components
/// keep one of each name).
#[derive(Default)]
struct Schemas(Vec<(String, RefOr<Schema>)>);

impl Schemas {
    /// `T`'s schema (and those it names) added; a reference to it.
    fn of<T: ToSchema>(&mut self) -> RefOr<Schema> {
        self.0.push((T::name().into_owned(), T::schema()));
        T::schemas(&mut self.0);
        Ref::from_schema_name(T::name()).into()
    }
}

/// One of several schemas (bodies or answers a route takes in more than
/// one shape).
fn one_of(items: impl IntoIterator<Item = RefOr<Schema>>) -> RefOr<Schema> {
    items
        .into_iter()
        .fold(OneOfBuilder::new(), OneOfBuilder::item)
        .into()
}

/// Any of several schemas (shapes that may overlap).
fn any_of(items: impl IntoIterator<Item = RefOr<Schema>>) -> RefOr<Schema> {
    items
        .into_iter()
        .fold(AnyOfBuilder::new(), AnyOfBuilder::item)
        .into()
}

fn integer(minimum: u64, maximum: u64) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(minimum))
        .maximum(Some(maximum))
        .into()
}

/// A route's parameters: in its path or query, with their schemas.
enum Param {
    Path(&'static str, RefOr<Schema>),
    Query(&'static str, RefOr<Schema>, String),
}

/// One route as the document describes it.
struct Route {
    method: HttpMethod,
    path: &'static str,
    /// Who may call it, and what it does (the README's API table).
    summary: &'static str,
    params: Vec<Param>,
    /// The body (JSON) a write takes.
    body: Option<RefOr<Schema>>,
    /// The success answer (200), JSON.
    answer: RefOr<Schema>,
    /// Whether it reads the ledger's state (and so takes `?consistency=`).
    reads_state: bool,
    /// What a 422 carries besides an error: a refused atomic batch
    /// answers with its items.
    refusal: Option<RefOr<Schema>>,
    /// Routes whose `{id}` is the answer's `id` (OpenAPI links: what a
    /// client, or a stateful test, may call next with it).
    then: &'static [(HttpMethod, &'static str)],
}

impl Route {
    fn get(path: &'static str, summary: &'static str, answer: RefOr<Schema>) -> Self {
        Self {
            method: HttpMethod::Get,
            path,
            summary,
            params: Vec::new(),
            body: None,
            answer,
            reads_state: true,
            refusal: None,
            then: &[],
        }
    }

    fn write(
        method: HttpMethod,
        path: &'static str,
        summary: &'static str,
        body: RefOr<Schema>,
        answer: RefOr<Schema>,
    ) -> Self {
        Self {
            method,
            path,
            summary,
            params: Vec::new(),
            body: Some(body),
            answer,
            reads_state: false,
            refusal: None,
            then: &[],
        }
    }

    fn with(mut self, param: Param) -> Self {
        self.params.push(param);
        self
    }

    fn refused_as(mut self, answer: RefOr<Schema>) -> Self {
        self.refusal = Some(answer);
        self
    }

    fn then(mut self, routes: &'static [(HttpMethod, &'static str)]) -> Self {
        self.then = routes;
        self
    }

    /// A read of this node's own view, not of the ledger's state.
    fn of_this_node(mut self) -> Self {
        self.reads_state = false;
        self
    }

    fn is_write(&self) -> bool {
        self.body.is_some()
    }

    /// Reads take `?consistency=`; writes an optional signature header.
    fn operation(self, errors: &Errors) -> Operation {
        let is_write = self.is_write();
        let mut op = OperationBuilder::new()
            .summary(Some(self.summary))
            .operation_id(Some(operation_id(&self.method, self.path)))
            .tag(self.path.split('/').nth(2).unwrap_or("v1"));
        for param in self.params {
            let (name, place, schema, description, required) = match param {
                Param::Path(name, schema) => (name, ParameterIn::Path, schema, None, true),
                Param::Query(name, schema, what) => {
                    (name, ParameterIn::Query, schema, Some(what), false)
                }
            };
            op = op.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(place)
                    .required(if required {
                        Required::True
                    } else {
                        Required::False
                    })
                    .description(description)
                    .schema(Some(schema)),
            );
        }
        if is_write {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(crate::identity::request::SIGNATURE_HEADER)
                    .parameter_in(ParameterIn::Header)
                    .required(Required::False)
                    .description(Some(
                        "the caller's signature over the request (README, Signed requests): \
                         required for another organization's caller and for governance",
                    ))
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
            );
        }
        if self.reads_state {
            op = op.parameter(
                ParameterBuilder::new()
                    .name("consistency")
                    .parameter_in(ParameterIn::Query)
                    .required(Required::False)
                    .description(Some(
                        "`linearizable` (default) or `local`: this node's own state, with `as_of`",
                    ))
                    .schema(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .enum_values(Some(["linearizable", "local"])),
                    )),
            );
        }
        if let Some(body) = self.body {
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(body)).build(),
                    )
                    .required(Some(Required::True))
                    .build(),
            ));
        }
        let mut ok = ResponseBuilder::new().description("the answer").content(
            "application/json",
            ContentBuilder::new().schema(Some(self.answer)).build(),
        );
        for (method, path) in self.then {
            let id = operation_id(method, path);
            let link = LinkBuilder::new()
                .operation_id(id.clone())
                .parameter("id", "$response.body#/id");
            ok = ok.link(id, link.build());
        }
        op = op.response("200", ok.build());
        op = errors.answered(op, READ_ERRORS, self.refusal.as_ref());
        if is_write {
            op = errors.answered(op, WRITE_ERRORS, self.refusal.as_ref());
        }
        op.build()
    }
}

fn json_response(description: &str, schema: RefOr<Schema>) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(schema)).build(),
        )
        .build()
}

/// `get_v1_accounts_id_transfers` for `GET /v1/accounts/{id}/transfers`.
fn operation_id(method: &HttpMethod, path: &str) -> String {
    let method = match method {
        HttpMethod::Get => "get",
        HttpMethod::Post => "post",
        HttpMethod::Put => "put",
        HttpMethod::Delete => "delete",
        HttpMethod::Options => "options",
        HttpMethod::Head => "head",
        HttpMethod::Patch => "patch",
        HttpMethod::Trace => "trace",
    };
    let path: String = path
        .chars()
        .filter(|c| !matches!(c, '{' | '}' | '.'))
        .map(|c| if c == '/' { '_' } else { c })
        .collect();
    format!("{method}{path}")
}

/// The description of the `/v1` API, as JSON, under `limits`: the page,
/// batch, readers, memo and pending-timeout bounds shown are a node's own.
pub fn document(limits: &Limits) -> serde_json::Value {
    let mut doc = serde_json::to_value(built(limits)).expect("the description serializes");
    bound(&mut doc, limits);
    doc
}

/// The node's own bounds, set on the body schemas that take them (the
/// derived schemas know the types, not the limits).
fn bound(doc: &mut serde_json::Value, limits: &Limits) {
    use serde_json::json;
    let mut set = |field: &str, values: serde_json::Value| {
        let at = format!("/components/schemas/{field}");
        let schema = doc
            .pointer_mut(&at)
            .expect("the derived schema has this field");
        for (key, value) in values.as_object().expect("an object of keys") {
            schema[key] = value.clone();
        }
    };
    let max = limits.batch_transfers_max;
    set(
        "BatchBody/properties/transfers",
        json!({"minItems": 1, "maxItems": max}),
    );
    for body in ["CreateAccountBody", "ReadersBody"] {
        let max = limits.readers_max;
        set(
            &format!("{body}/properties/readers"),
            json!({"maxItems": max}),
        );
    }
    let memo = format!(
        "at most {} bytes of UTF-8; control characters and bidirectional overrides are refused",
        limits.memo_bytes_max
    );
    set("TransferBody/properties/memo", json!({"description": memo}));
    let timeout = json!({
        "minimum": 1,
        "maximum": limits.pending_timeout_ms_max,
        "description": "for a pending transfer only",
    });
    set("TransferBody/properties/timeout_ms", timeout);
}

fn built(limits: &Limits) -> OpenApi {
    let mut s = Schemas::default();
    let account = || Param::Path("id", AccountId::schema());
    let transfer = || Param::Path("id", TransferId::schema());
    let page_text = format!(
        "items per page (default {}, at most {}: the node's `limits.page_items_max`)",
        super::query::PAGE_ITEMS_DEFAULT.min(limits.page_items_max),
        limits.page_items_max
    );
    let page = || {
        Param::Query(
            "limit",
            integer(1, limits.page_items_max as u64),
            page_text.clone(),
        )
    };
    let cursor = |schema| {
        Param::Query(
            "cursor",
            schema,
            "the `next_cursor` of the previous page".into(),
        )
    };
    let height = || integer(0, u64::MAX);
    // A body the route ignores but for its declared type: `{}` (a write
    // is always declared as JSON).
    let empty = s.of::<EmptyBody>();
    let account_view = s.of::<AccountView>();
    let transfer_view = s.of::<TransferRead>();
    let proposal_view = s.of::<ProposalView>();
    let batch_answers = [s.of::<BatchAll>(), s.of::<BatchRefused>()];
    let any_object = ObjectBuilder::new().schema_type(Type::Object).into();
    use HttpMethod::{Get, Post, Put};
    let routes = vec![
        Route::write(
            Post,
            "/v1/accounts",
            "app, admin: create an account owned by the caller's organization",
            s.of::<CreateAccountBody>(),
            account_view.clone(),
        )
        .then(&[
            (Get, "/v1/accounts/{id}"),
            (Get, "/v1/accounts/{id}/transfers"),
            (Put, "/v1/accounts/{id}/readers"),
            (Post, "/v1/accounts/{id}/close"),
        ]),
        Route::get(
            "/v1/accounts",
            "any role: the accounts the caller may read, in id order",
            s.of::<AccountsPage>(),
        )
        .with(cursor(AccountId::schema()))
        .with(page()),
        Route::get(
            "/v1/accounts/{id}",
            "owner organization, granted readers: an account and its balances",
            one_of([account_view.clone(), s.of::<BalanceAtView>()]),
        )
        .with(account())
        .with(Param::Query(
            "at_height",
            height(),
            "the balances as of this block".into(),
        )),
        Route::get(
            "/v1/accounts/{id}/transfers",
            "owner organization, granted readers: the account's history, in commit order",
            s.of::<HistoryPage>(),
        )
        .with(account())
        .with(cursor(height()))
        .with(page()),
        Route::write(
            Put,
            "/v1/accounts/{id}/readers",
            "admin of the owner organization: replace who may read the account",
            s.of::<ReadersBody>(),
            account_view.clone(),
        )
        .with(account()),
        Route::write(
            Post,
            "/v1/accounts/{id}/close",
            "admin of the owner organization: the account takes part in no new transfer",
            empty.clone(),
            account_view,
        )
        .with(account()),
        Route::write(
            Post,
            "/v1/transfers",
            "app, admin of the debit account's organization: one transfer, or a batch",
            one_of([s.of::<TransferBody>(), s.of::<BatchBody>()]),
            one_of([
                transfer_view.clone(),
                batch_answers[0].clone(),
                batch_answers[1].clone(),
            ]),
        )
        .refused_as(one_of(batch_answers.clone()))
        .then(&[
            (Get, "/v1/transfers/{id}"),
            (Get, "/v1/transfers/{id}/proof"),
            (Post, "/v1/transfers/{id}/post"),
            (Post, "/v1/transfers/{id}/void"),
        ]),
        Route::get(
            "/v1/transfers/{id}",
            "whoever may read either account: the transfer",
            transfer_view.clone(),
        )
        .with(transfer()),
        Route::write(
            Post,
            "/v1/transfers/{id}/post",
            "app, admin of the debit account's organization: post a pending transfer, all or part",
            s.of::<PostBody>(),
            transfer_view.clone(),
        )
        .with(transfer()),
        Route::write(
            Post,
            "/v1/transfers/{id}/void",
            "app, admin of the debit account's organization: release a pending transfer's funds",
            empty.clone(),
            transfer_view,
        )
        .with(transfer()),
        Route::get(
            "/v1/transfers/{id}/proof",
            "whoever may read the transfer: its block header, leaf and Merkle path",
            s.of::<ProofView>(),
        )
        .with(transfer()),
        Route::get(
            "/v1/blocks",
            "any member certificate: block headers with their hashes",
            s.of::<BlocksPage>(),
        )
        .with(cursor(height()))
        .with(page()),
        Route::get(
            "/v1/blocks/{height}",
            "any member certificate: one header, its hash and its leaf hashes",
            s.of::<BlockRead>(),
        )
        .with(Param::Path("height", height())),
        Route::get(
            "/v1/cluster",
            "any member certificate: this node's view of the consortium",
            s.of::<ClusterView>(),
        )
        .of_this_node(),
        Route::get(
            "/v1/gov/proposals",
            "any member certificate: proposals, by id",
            s.of::<ProposalsPage>(),
        )
        .with(cursor(height()))
        .with(page()),
        Route::write(
            Post,
            "/v1/gov/proposals",
            "admin, signed: propose an action to the consortium",
            s.of::<ActionBody>(),
            proposal_view.clone(),
        )
        .then(&[
            (Get, "/v1/gov/proposals/{id}"),
            (Post, "/v1/gov/proposals/{id}/ballots"),
        ]),
        Route::get(
            "/v1/gov/proposals/{id}",
            "any member certificate: one proposal, its ballots and tally",
            proposal_view.clone(),
        )
        .with(Param::Path("id", integer(1, u64::MAX))),
        Route::write(
            Post,
            "/v1/gov/proposals/{id}/ballots",
            "admin, signed: approve or reject a proposal, naming its digest",
            s.of::<BallotBody>(),
            proposal_view,
        )
        .with(Param::Path("id", integer(1, u64::MAX))),
        Route::write(
            Post,
            "/v1/gov/revocations",
            "admin, signed: revoke one of the organization's own certificates",
            s.of::<RevokeBody>(),
            s.of::<RevocationView>(),
        ),
        Route::write(
            Post,
            "/v1/gov/join",
            "admin of an organization added by vote, signed: acknowledge joining",
            empty,
            s.of::<Joined>(),
        ),
        Route::get(
            "/v1/gov/registry",
            "any member certificate: organizations, policy, revocations, frozen accounts, nodes",
            s.of::<RegistryView>(),
        ),
        Route::get(
            "/v1/openapi.json",
            "any member certificate: this description",
            any_object,
        )
        .of_this_node(),
    ];
    let errors = Errors::new(&mut s);
    let mut paths = PathsBuilder::new();
    for route in routes {
        let (method, path) = (route.method.clone(), route.path);
        paths = paths.path(path, PathItem::new(method, route.operation(&errors)));
    }
    paths = paths.path(
        "/v1/backup",
        PathItem::new(HttpMethod::Get, backup_operation(&errors)),
    );
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("alliance")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "A consortium ledger's API. Every request needs a member organization's \
                     client certificate (mutual TLS); the README says who may do what.",
                )),
        )
        .paths(paths)
        .components(Some(
            ComponentsBuilder::new()
                .schemas_from_iter(s.0)
                .security_scheme(
                    "member_certificate",
                    SecurityScheme::MutualTls {
                        description: Some(
                            "a client certificate issued by a member organization's CA".into(),
                        ),
                        deprecated: None,
                        extensions: None,
                    },
                )
                .build(),
        ))
        .security(Some([SecurityRequirement::new(
            "member_certificate",
            Vec::<String>::new(),
        )]))
        .build()
}

/// `GET /v1/backup`: a binary body, for an admin of the node's own
/// organization.
fn backup_operation(errors: &Errors) -> Operation {
    let binary = ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)));
    let op = OperationBuilder::new()
        .summary(Some(
            "admin of the node's own organization: a backup of its applied state",
        ))
        .operation_id(Some("get_v1_backup"))
        .tag("backup")
        .response(
            "200",
            ResponseBuilder::new()
                .description("the backup (`alliance restore` reads it)")
                .content(
                    "application/octet-stream",
                    ContentBuilder::new().schema(Some(binary)).build(),
                )
                .build(),
        );
    errors.answered(op, READ_ERRORS, None).build()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    fn described() -> Value {
        document(&Limits::default())
    }

    /// A node's own bounds are in its description.
    #[test]
    fn the_description_shows_the_nodes_limits() {
        let limits = Limits {
            batch_transfers_max: 17,
            readers_max: 5,
            memo_bytes_max: 99,
            pending_timeout_ms_max: 1234,
            page_items_max: 7,
            ..Limits::default()
        };
        let doc = document(&limits);
        let schemas = &doc["components"]["schemas"];
        let transfers = &schemas["BatchBody"]["properties"]["transfers"];
        assert_eq!(
            (&transfers["minItems"], &transfers["maxItems"]),
            (&1.into(), &17.into())
        );
        for body in ["CreateAccountBody", "ReadersBody"] {
            assert_eq!(
                schemas[body]["properties"]["readers"]["maxItems"], 5,
                "{body}"
            );
        }
        let transfer = &schemas["TransferBody"]["properties"];
        assert!(transfer["memo"]["description"]
            .as_str()
            .unwrap()
            .contains("at most 99 bytes"));
        assert_eq!(transfer["timeout_ms"]["maximum"], 1234);
        assert_eq!(
            transfer["timeout_ms"]["type"],
            serde_json::json!(["integer", "null"])
        );
        let limit = doc["paths"]["/v1/blocks"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap();
        assert_eq!(limit["schema"]["maximum"], 7);
    }

    /// The description lists exactly the routes the API listener serves,
    /// each with the methods it takes.
    #[test]
    fn the_description_lists_every_served_route_and_no_other() {
        let served: BTreeSet<(String, String)> = super::super::routes::ROUTES
            .iter()
            .flat_map(|(path, methods)| {
                methods
                    .iter()
                    .map(move |(m, _)| (format!("/v1{path}"), m.to_ascii_lowercase()))
            })
            .collect();
        let doc = described();
        let listed: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| matches!(k.as_str(), "get" | "post" | "put" | "delete"))
                    .map(move |m| (path.clone(), m.clone()))
            })
            .collect();
        assert_eq!(served, listed);
        assert_eq!(doc["openapi"], "3.1.0");
    }

    /// Every link names an operation of the description.
    #[test]
    fn every_link_names_an_operation() {
        let doc = described();
        let ids: BTreeSet<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        let mut links = 0;
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                for link in op["responses"]["200"]["links"]
                    .as_object()
                    .into_iter()
                    .flatten()
                {
                    let id = link.1["operationId"].as_str().unwrap();
                    assert!(ids.contains(id), "{id}");
                    links += 1;
                }
            }
        }
        assert_eq!(links, 10);
    }

    /// Every schema reference names a schema the description holds.
    #[test]
    fn every_reference_resolves() {
        fn refs(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        out.push(r.clone());
                    }
                    m.values().for_each(|v| refs(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc = described();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 50, "{}", found.len());
        for r in found {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{r} is not held"
            );
        }
    }
}

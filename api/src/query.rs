//! A query parameter a route does not take is refused (`400`): a misspelt one
//! (`?only-plan=true`) would otherwise be ignored, and a request meant only to
//! plan would deploy. What each route takes is what the OpenAPI document says.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::OpenApi;
use utoipa::openapi::path::{Operation, ParameterIn};

use crate::error::ApiError;

/// The query parameters each operation takes, by method and path pattern (as
/// the router matches it: `/v1/deployments/{id}`).
#[derive(Debug, Default)]
pub(crate) struct Known(HashMap<(Method, String), BTreeSet<String>>);

impl Known {
    /// What `document` says each operation takes.
    pub(crate) fn of(document: &OpenApi) -> Self {
        let mut known = HashMap::new();
        for (path, item) in &document.paths.paths {
            let operations = [
                (Method::GET, &item.get),
                (Method::PUT, &item.put),
                (Method::POST, &item.post),
                (Method::DELETE, &item.delete),
                (Method::PATCH, &item.patch),
            ];
            for (method, operation) in operations {
                if let Some(operation) = operation {
                    known.insert((method, path.clone()), query_parameters(operation));
                }
            }
        }
        Self(known)
    }
}

fn query_parameters(operation: &Operation) -> BTreeSet<String> {
    operation
        .parameters
        .iter()
        .flatten()
        .filter(|parameter| parameter.parameter_in == ParameterIn::Query)
        .map(|parameter| parameter.name.clone())
        .collect()
}

/// Refuses a request whose query names a parameter its operation does not take.
/// Routes the document does not describe (probes, the dashboard) are let by.
pub(crate) async fn refuse_unknown(
    State(known): State<Arc<Known>>,
    request: Request,
    next: Next,
) -> Response {
    let taken = match (
        request.uri().query(),
        request.extensions().get::<MatchedPath>(),
    ) {
        (Some(_), Some(path)) => known
            .0
            .get(&(request.method().clone(), path.as_str().to_owned())),
        _ => None,
    };
    if let Some(taken) = taken {
        let unknown = match Query::<Vec<(String, String)>>::try_from_uri(request.uri()) {
            Ok(Query(pairs)) => pairs.into_iter().find(|(name, _)| !taken.contains(name)),
            Err(rejection) => return ApiError::from(rejection).into_response(),
        };
        if let Some((name, _)) = unknown {
            let takes = if taken.is_empty() {
                "this route takes none".to_owned()
            } else {
                let names: Vec<String> = taken.iter().map(|name| format!("`{name}`")).collect();
                format!("this route takes {}", names.join(", "))
            };
            return ApiError::BadQuery {
                parameter: "query",
                reason: format!("unknown parameter `{name}`: {takes}"),
            }
            .into_response();
        }
    }
    next.run(request).await
}

//! Cursor pagination: a list's `cursor` (the previous page's `next_cursor`) and
//! `limit` query parameters.

use std::str::FromStr;

use serde::Deserialize;
use shared::store::{PageRequest, PageRequestError};
use utoipa::IntoParams;

use crate::error::ApiError;

/// A list's page query: where a page starts (`cursor`, whose schema is the list's
/// cursor's) and how long it is. Every list has its own, so that the OpenAPI
/// document says what a cursor of that list looks like.
macro_rules! page_query {
    ($(#[$doc:meta])* $name:ident, $($cursor:tt)+) => {
        $(#[$doc])*
        #[derive(Debug, Default, Deserialize, IntoParams)]
        #[serde(deny_unknown_fields)]
        #[into_params(parameter_in = Query)]
        pub(crate) struct $name {
            /// The `next_cursor` of the previous page.
            #[param($($cursor)+)]
            pub(crate) cursor: Option<String>,
            /// Items per page, 1 to 100 (default 20).
            #[param(minimum = 1, maximum = 100)]
            pub(crate) limit: Option<u64>,
        }

        impl $name {
            /// The page asked for; a cursor that is not one of this list's, or a
            /// limit out of range, is bad input.
            pub(crate) fn request<C: FromStr>(&self) -> Result<PageRequest<C>, ApiError> {
                page_request(self.cursor.as_deref(), self.limit)
            }
        }
    };
}

page_query!(
    /// A page of a list whose cursor is an id (tokens, hooks, the audit trail).
    PageQuery,
    value_type = Option<uuid::Uuid>
);
page_query!(
    /// A page of the apps, whose cursor is an app's name.
    AppPageQuery,
    pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
    max_length = 63
);
page_query!(
    /// A page of an app's releases, whose cursor is a release's version.
    ReleasePageQuery,
    value_type = Option<u32>,
    minimum = 1
);

/// The page asked for by `cursor` and `limit`.
pub(crate) fn page_request<C: FromStr>(
    cursor: Option<&str>,
    limit: Option<u64>,
) -> Result<PageRequest<C>, ApiError> {
    PageRequest::parse(cursor, limit).map_err(|err| ApiError::BadQuery {
        parameter: match err {
            PageRequestError::Cursor(_) => "cursor",
            PageRequestError::Limit(_) => "limit",
        },
        reason: err.to_string(),
    })
}

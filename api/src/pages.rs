//! Cursor pagination: a list's `cursor` (the previous page's `next_cursor`) and
//! `limit` query parameters.

use std::str::FromStr;

use serde::Deserialize;
use shared::store::{PageRequest, PageRequestError};
use utoipa::IntoParams;

use crate::error::ApiError;

/// Where a page starts and how long it is.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// The `next_cursor` of the previous page.
    pub(crate) cursor: Option<String>,
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub(crate) limit: Option<u64>,
}

impl PageQuery {
    /// The page asked for; a cursor that is not one of this list's, or a limit out
    /// of range, is bad input.
    pub(crate) fn request<C: FromStr>(&self) -> Result<PageRequest<C>, ApiError> {
        page_request(self.cursor.as_deref(), self.limit)
    }
}

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

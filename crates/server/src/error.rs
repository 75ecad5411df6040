//! API errors: a status code and a message a user can act on, as JSON.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct ApiError {
    pub code: StatusCode,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }
    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn forbidden(resource: &str, action: &str, object: &str) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            format!("permission denied: {resource}, {action}, {object}"),
        )
    }
    pub fn not_found(what: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<kube::Error> for ApiError {
    /// The API server's own 4xx answers (invalid names, conflicts, missing
    /// objects) stay 4xx; anything else means the cluster is in trouble.
    fn from(e: kube::Error) -> ApiError {
        match &e {
            kube::Error::Api(s) if (400..500).contains(&s.code) => ApiError::new(
                StatusCode::from_u16(s.code).unwrap_or(StatusCode::BAD_REQUEST),
                s.message.clone(),
            ),
            _ => ApiError::new(StatusCode::BAD_GATEWAY, format!("kubernetes API: {e}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "code": self.code.as_u16() });
        (self.code, Json(body)).into_response()
    }
}

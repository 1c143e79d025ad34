//! API errors: `{"error":{"code","message"}}` with a stable snake_case code per status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable: `bad_request`, `invalid_workflow`, `unauthenticated`, `forbidden`, `not_found`,
    /// `invalid_name`, `conflict`, `payload_too_large`, `unsupported_media_type`, `internal`, `unavailable`.
    pub code: String,
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m)
    }
    pub fn not_found(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", m)
    }
    pub fn conflict(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", m)
    }
    pub fn unauthenticated(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", m)
    }
    pub fn forbidden(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", m)
    }
    pub fn internal(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        if let Some(u) = e.downcast_ref::<crate::cli::Usage>() {
            let code = if u.0.contains(": error: ") {
                "invalid_workflow"
            } else {
                "bad_request"
            };
            return ApiError::new(StatusCode::BAD_REQUEST, code, u.0.clone());
        }
        if let Some(s) = e.downcast_ref::<weir_store::Error>() {
            return match s {
                weir_store::Error::RunNotFound(_) => ApiError::not_found(s.to_string()),
                weir_store::Error::Ambiguous(..) => ApiError::not_found(s.to_string()),
                weir_store::Error::RunExists(_) => ApiError::conflict(s.to_string()),
                weir_store::Error::InvalidName(m) => {
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", m.clone())
                }
                _ => ApiError::internal(s.to_string()),
            };
        }
        ApiError::internal(format!("{e:#}"))
    }
}

impl From<weir_store::Error> for ApiError {
    fn from(e: weir_store::Error) -> ApiError {
        ApiError::from(anyhow::Error::from(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code: self.code.to_string(),
                    message: self.message,
                },
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"weir\""),
            );
        }
        r
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

//! A finished HTTP answer as plain data, so it can be stored under an `Idempotency-Key`
//! and replayed byte for byte.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, PROBLEM_JSON};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    pub status: u16,
    /// The JSON body.
    pub body: String,
    /// `application/problem+json` rather than `application/json`.
    pub problem: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl Answer {
    pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Answer {
        match serde_json::to_string(value) {
            Ok(body) => Answer {
                status: status.as_u16(),
                body,
                problem: false,
                location: None,
                retry_after: None,
            },
            Err(e) => Answer::error(&ApiError::new(
                super::error::ProblemType::Internal,
                format!("cannot encode the answer: {e}"),
            )),
        }
    }

    pub fn error(e: &ApiError) -> Answer {
        Answer {
            status: e.http_status().as_u16(),
            body: serde_json::to_string(&e.problem()).unwrap_or_else(|_| "{}".into()),
            problem: true,
            location: None,
            retry_after: e.retry_after,
        }
    }

    pub fn with_location(mut self, location: String) -> Answer {
        self.location = Some(location);
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn into_response(self, replayed: bool) -> HttpResponse {
        let mut b = HttpResponse::build(self.status());
        b.content_type(if self.problem {
            PROBLEM_JSON
        } else {
            "application/json"
        });
        if let Some(l) = self.location {
            b.insert_header(("Location", l));
        }
        if let Some(s) = self.retry_after {
            b.insert_header(("Retry-After", s.to_string()));
        }
        if replayed {
            b.insert_header(("Idempotent-Replayed", "true"));
        }
        b.body(self.body)
    }
}

impl From<Result<Answer, ApiError>> for Answer {
    fn from(r: Result<Answer, ApiError>) -> Answer {
        r.unwrap_or_else(|e| Answer::error(&e))
    }
}

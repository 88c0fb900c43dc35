//! Pagination of list endpoints: `?page=&size=` in, `{items, page, size, total}` out.

use crate::error::{ApiError, ApiResult};
use serde::Serialize;
use std::collections::HashMap;

/// A page of results: `{items, page, size, total}`; pages count from 1.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub page: u32,
    pub size: u32,
    pub total: u64,
}

/// Validated `page` and `size` query parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u32,
    pub size: u32,
}

impl PageRequest {
    pub const MAX_SIZE: u32 = 100;

    pub fn parse(query: &HashMap<String, String>) -> ApiResult<Self> {
        let number = |name: &str, default: u32, max: u32| -> ApiResult<u32> {
            match query.get(name) {
                None => Ok(default),
                Some(raw) => {
                    raw.parse::<u32>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
                        ApiError::validation(name, format!("must be an integer from 1 to {max}"))
                    })
                }
            }
        };
        Ok(Self { page: number("page", 1, u32::MAX)?, size: number("size", 20, Self::MAX_SIZE)? })
    }

    pub fn offset(&self) -> u64 {
        u64::from(self.page - 1) * u64::from(self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_bounds_and_offsets() {
        assert_eq!(PageRequest::parse(&q(&[])).unwrap(), PageRequest { page: 1, size: 20 });
        let p = PageRequest::parse(&q(&[("page", "3"), ("size", "10")])).unwrap();
        assert_eq!(p.offset(), 20);
        for (k, v) in [("page", "0"), ("size", "101"), ("size", "-1"), ("page", "x")] {
            match PageRequest::parse(&q(&[(k, v)])).unwrap_err() {
                ApiError::Validation { field, .. } => assert_eq!(field, k),
                other => panic!("{other:?}"),
            }
        }
    }
}

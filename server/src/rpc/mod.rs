//! The Cap'n Proto servers behind schema/api.capnp. They translate between
//! the wire and `containers`/`process`; no logic of their own beyond that.

pub mod container;
pub mod grove;
pub mod limits;
pub mod net;
pub mod process;

use crate::error::{ApiError, ApiResult};
use std::collections::BTreeMap;

/// A Text field as a String, with the field's name in the error.
pub fn text(field: &str, value: capnp::Result<capnp::text::Reader<'_>>) -> ApiResult<String> {
    value
        .map_err(|e| ApiError::invalid(field, e.extra))?
        .to_string()
        .map_err(|e| ApiError::invalid(field, format!("not UTF-8: {e}")))
}

pub fn text_list(
    field: &str,
    value: capnp::Result<capnp::text_list::Reader<'_>>,
) -> ApiResult<Vec<String>> {
    let list = value.map_err(|e| ApiError::invalid(field, e.extra))?;
    (0..list.len())
        .map(|i| text(&format!("{field}[{i}]"), list.get(i)))
        .collect()
}

pub fn properties(
    field: &str,
    value: capnp::Result<capnp::struct_list::Reader<'_, grove_schema::api_capnp::property::Owned>>,
) -> ApiResult<BTreeMap<String, String>> {
    let list = value.map_err(|e| ApiError::invalid(field, e.extra))?;
    let mut map = BTreeMap::new();
    for (i, p) in list.iter().enumerate() {
        let name = text(&format!("{field}[{i}].name"), p.get_name())?;
        let value = text(&format!("{field}[{i}].value"), p.get_value())?;
        map.insert(name, value);
    }
    Ok(map)
}

pub fn set_properties(
    mut list: capnp::struct_list::Builder<'_, grove_schema::api_capnp::property::Owned>,
    properties: &BTreeMap<String, String>,
) {
    for (i, (name, value)) in properties.iter().enumerate() {
        let mut p = list.reborrow().get(i as u32);
        p.set_name(name);
        p.set_value(value);
    }
}

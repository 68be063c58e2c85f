//! The Cap'n Proto servers behind schema/api.capnp. They translate between
//! the wire and `containers`/`process`; no logic of their own beyond that.

pub mod container;
pub mod grove;
pub mod images;
pub mod limits;
pub mod net;
pub mod process;
pub mod top;

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

/// Bounds on a container's properties (bytes of UTF-8): groved keeps them
/// in memory and rewrites the container's record with each change, so a
/// client may not make them arbitrarily large.
pub const MAX_PROPERTY_NAME: usize = 1024;
pub const MAX_PROPERTY_VALUE: usize = 64 * 1024;
pub const MAX_PROPERTIES: usize = 256;
/// All names and values of one container together.
pub const MAX_PROPERTY_BYTES: usize = 256 * 1024;

/// One property's name and value within their bounds; the error names
/// the field (`name_field`, or `value_field` for the value).
pub fn check_property(
    name_field: &str,
    value_field: &str,
    name: &str,
    value: &str,
) -> ApiResult<()> {
    for (field, what, len, max) in [
        (name_field, "name", name.len(), MAX_PROPERTY_NAME),
        (value_field, "value", value.len(), MAX_PROPERTY_VALUE),
    ] {
        if len > max {
            return Err(ApiError::invalid(
                field,
                format!("a property {what} may have at most {max} bytes, not {len}"),
            ));
        }
    }
    Ok(())
}

/// A container's whole set of properties within the bounds (each checked
/// on its own before).
pub fn check_property_set(field: &str, props: &BTreeMap<String, String>) -> ApiResult<()> {
    let bytes: usize = props.iter().map(|(n, v)| n.len() + v.len()).sum();
    if props.len() > MAX_PROPERTIES {
        return Err(ApiError::invalid(
            field,
            format!(
                "a container may have at most {MAX_PROPERTIES} properties, not {}",
                props.len()
            ),
        ));
    }
    if bytes > MAX_PROPERTY_BYTES {
        return Err(ApiError::invalid(
            field,
            format!(
                "a container's property names and values may have at most \
                 {MAX_PROPERTY_BYTES} bytes in all, not {bytes}"
            ),
        ));
    }
    Ok(())
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

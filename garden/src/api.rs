//! The request/response routes: each reads its JSON request (if any),
//! makes the Grove call(s) and answers Garden's JSON
//! (server/request_handling.go is the reference for every shape).

use crate::errors::GardenError;
use crate::http::{HttpError, Request, MAX_JSON_BODY};
use crate::routes::Route;
use crate::server::{Conn, Ctx};
use crate::translate;
use crate::wire;
use grove_client::api;
use serde_json::{json, Map, Value};

type R<T> = Result<T, GardenError>;

pub fn http_error(e: HttpError) -> GardenError {
    match e {
        HttpError::Bad(m) => GardenError::bad_request(m),
        HttpError::TooLarge(status, m) => GardenError::too_large(status, m),
        HttpError::Io(e) => GardenError::bad_request(format!("reading the request: {e}")),
    }
}

/// The request's JSON body as `T` (Garden decodes with json.Decoder; a
/// body that does not decode is answered 400 here).
pub async fn read_json<T: serde::de::DeserializeOwned>(conn: &mut Conn, req: &mut Request) -> R<T> {
    let body = conn
        .reader
        .body(&mut req.body, MAX_JSON_BODY)
        .await
        .map_err(http_error)?;
    serde_json::from_slice(&body)
        .map_err(|e| GardenError::bad_request(format!("malformed JSON request body: {e}")))
}

/// The container capability, pipelined on the lookup: a lookup error
/// (404 ContainerNotFoundError) surfaces on the first call made on it.
pub async fn container(ctx: &Ctx, handle: &str) -> R<api::container::Client> {
    let client = ctx.grove.client().await?;
    let mut req = client.grove.lookup_request();
    req.get().set_handle(handle);
    Ok(req.send().pipeline.get_container())
}

fn empty() -> Value {
    json!({})
}

/// Go's `omitempty` on a map of numbers.
fn nonzero(pairs: &[(&str, u64)]) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        if *v != 0 {
            m.insert(k.to_string(), json!(v));
        }
    }
    Value::Object(m)
}

pub async fn handle(ctx: &Ctx, conn: &mut Conn, req: &mut Request, route: Route) -> R<Value> {
    let g = &ctx.grove;
    match route {
        Route::Ping => {
            let client = g.client().await?;
            client.ping().await.map_err(|e| g.fail(e, "", ""))?;
            Ok(empty())
        }
        Route::Capacity => {
            let client = g.client().await?;
            let resp = client
                .grove
                .capacity_request()
                .send()
                .promise
                .await
                .map_err(|e| g.fail(e, "", ""))?;
            let c = resp
                .get()
                .and_then(|r| r.get_capacity())
                .map_err(|e| g.fail(e, "", ""))?;
            Ok(nonzero(&[
                ("memory_in_bytes", c.get_memory_in_bytes()),
                ("disk_in_bytes", c.get_disk_in_bytes()),
                (
                    "schedulable_disk_in_bytes",
                    c.get_schedulable_disk_in_bytes(),
                ),
                ("max_containers", c.get_max_containers()),
            ]))
        }
        Route::List => {
            // Garden takes the first value of each query parameter as a
            // property that must match (AND).
            let mut filter: Vec<(String, String)> = Vec::new();
            for (k, v) in &req.query {
                if !filter.iter().any(|(fk, _)| fk == k) {
                    filter.push((k.clone(), v.clone()));
                }
            }
            let client = g.client().await?;
            let handles = client.list(&filter).await.map_err(|e| g.fail(e, "", ""))?;
            Ok(json!({ "Handles": handles }))
        }
        Route::Create => {
            let spec: wire::ContainerSpec = read_json(conn, req).await?;
            let client = g.client().await?;
            let mut request = client.grove.create_request();
            translate::container_spec(&spec, request.get().init_spec())?;
            let created = request.send().pipeline.get_container();
            let resp = created
                .handle_request()
                .send()
                .promise
                .await
                .map_err(|e| g.fail(e, &spec.handle, ""))?;
            let handle = resp
                .get()
                .and_then(|r| r.get_handle())
                .map_err(|e| g.fail(e, "", ""))?
                .to_string()
                .map_err(|e| GardenError::internal(e.to_string()))?;
            // Garden's answer: struct{ Handle string } (no json tag).
            Ok(json!({ "Handle": handle }))
        }
        Route::Info(h) => {
            let c = container(ctx, &h).await?;
            let resp = c
                .info_request()
                .send()
                .promise
                .await
                .map_err(|e| g.fail(e, &h, ""))?;
            translate::info(
                resp.get()
                    .and_then(|r| r.get_info())
                    .map_err(|e| g.fail(e, &h, ""))?,
            )
        }
        Route::BulkInfo | Route::BulkMetrics => {
            bulk(ctx, req, matches!(route, Route::BulkMetrics)).await
        }
        Route::Destroy(h) => {
            let client = g.client().await?;
            client.destroy(&h).await.map_err(|e| g.fail(e, &h, ""))?;
            Ok(empty())
        }
        Route::Stop(h) => {
            let stop: wire::StopRequest = read_json(conn, req).await?;
            let c = container(ctx, &h).await?;
            let mut r = c.stop_request();
            r.get().set_kill(stop.kill);
            r.send().promise.await.map_err(|e| g.fail(e, &h, ""))?;
            Ok(empty())
        }
        Route::BandwidthLimits(h) => {
            let c = container(ctx, &h).await?;
            let resp = c
                .current_bandwidth_limits_request()
                .send()
                .promise
                .await
                .map_err(|e| g.fail(e, &h, ""))?;
            let l = resp
                .get()
                .and_then(|r| r.get_limits())
                .map_err(|e| g.fail(e, &h, ""))?;
            Ok(nonzero(&[
                ("rate", l.get_rate_in_bytes_per_second()),
                ("burst", l.get_burst_rate_in_bytes_per_second()),
            ]))
        }
        Route::CpuLimits(h) => {
            let c = container(ctx, &h).await?;
            let resp = c
                .current_cpu_limits_request()
                .send()
                .promise
                .await
                .map_err(|e| g.fail(e, &h, ""))?;
            let l = resp
                .get()
                .and_then(|r| r.get_limits())
                .map_err(|e| g.fail(e, &h, ""))?;
            // Grove's weight is cgroup v1's cpu.shares, which Garden reports
            // under both names.
            Ok(nonzero(&[
                ("weight", l.get_weight()),
                ("limit_in_shares", l.get_weight()),
            ]))
        }
        Route::DiskLimits(h) => {
            let c = container(ctx, &h).await?;
            let resp = c
                .current_disk_limits_request()
                .send()
                .promise
                .await
                .map_err(|e| g.fail(e, &h, ""))?;
            let l = resp
                .get()
                .and_then(|r| r.get_limits())
                .map_err(|e| g.fail(e, &h, ""))?;
            let scope = match l.get_scope() {
                Ok(api::disk_limits::Scope::Exclusive) => 1,
                _ => 0,
            };
            Ok(nonzero(&[
                ("inode_soft", l.get_inode_soft()),
                ("inode_hard", l.get_inode_hard()),
                ("byte_soft", l.get_byte_soft()),
                ("byte_hard", l.get_byte_hard()),
                ("scope", scope),
            ]))
        }
        Route::MemoryLimits(h) => {
            let c = container(ctx, &h).await?;
            let resp = c
                .current_memory_limits_request()
                .send()
                .promise
                .await
                .map_err(|e| g.fail(e, &h, ""))?;
            let l = resp
                .get()
                .and_then(|r| r.get_limits())
                .map_err(|e| g.fail(e, &h, ""))?;
            Ok(nonzero(&[("limit_in_bytes", l.get_limit_in_bytes())]))
        }
        Route::NetIn(h) => {
            let body: wire::NetInRequest = read_json(conn, req).await?;
            let c = container(ctx, &h).await?;
            let (host, container) = grove_client::net_in(&c, body.host_port, body.container_port)
                .await
                .map_err(|e| g.fail(e, &h, ""))?;
            // transport.NetInResponse (omitempty).
            Ok(nonzero(&[
                ("host_port", host as u64),
                ("container_port", container as u64),
            ]))
        }
        Route::NetOut(h) => {
            let rule: wire::NetOutRule = read_json(conn, req).await?;
            let c = container(ctx, &h).await?;
            let mut r = c.net_out_request();
            translate::net_out_rule(&rule, r.get().init_rule())?;
            r.send().promise.await.map_err(|e| g.fail(e, &h, ""))?;
            Ok(empty())
        }
        Route::BulkNetOut(h) => {
            let rules: Option<Vec<wire::NetOutRule>> = read_json(conn, req).await?;
            let rules = rules.unwrap_or_default();
            let c = container(ctx, &h).await?;
            let mut r = c.bulk_net_out_request();
            let mut list = r.get().init_rules(rules.len() as u32);
            for (i, rule) in rules.iter().enumerate() {
                translate::net_out_rule(rule, list.reborrow().get(i as u32))?;
            }
            r.send().promise.await.map_err(|e| g.fail(e, &h, ""))?;
            Ok(empty())
        }
        Route::GraceTime(h) => {
            // A bare time.Duration: nanoseconds.
            let nanos: i64 = read_json(conn, req).await?;
            let c = container(ctx, &h).await?;
            let mut r = c.set_grace_time_request();
            r.get()
                .set_grace_time_seconds(translate::nanos_to_secs(nanos));
            r.send().promise.await.map_err(|e| g.fail(e, &h, ""))?;
            Ok(empty())
        }
        Route::Properties(h) => {
            let c = container(ctx, &h).await?;
            let resp = c
                .properties_request()
                .send()
                .promise
                .await
                .map_err(|e| g.fail(e, &h, ""))?;
            translate::properties(resp.get().and_then(|r| r.get_properties()))
        }
        Route::Property(h, key) => {
            let c = container(ctx, &h).await?;
            let mut r = c.property_request();
            r.get().set_name(key.as_str());
            let resp = r.send().promise.await.map_err(|e| g.fail(e, &h, ""))?;
            let value = resp
                .get()
                .and_then(|r| r.get_value())
                .map_err(|e| g.fail(e, &h, ""))?
                .to_string()
                .map_err(|e| GardenError::internal(e.to_string()))?;
            Ok(json!({ "value": value }))
        }
        Route::SetProperty(h, key) => {
            let body: wire::PropertyValue = read_json(conn, req).await?;
            let c = container(ctx, &h).await?;
            let mut r = c.set_property_request();
            r.get().set_name(key.as_str());
            r.get().set_value(body.value.as_str());
            r.send().promise.await.map_err(|e| g.fail(e, &h, ""))?;
            Ok(empty())
        }
        Route::RemoveProperty(h, key) => {
            let c = container(ctx, &h).await?;
            let mut r = c.remove_property_request();
            r.get().set_name(key.as_str());
            r.send().promise.await.map_err(|e| g.fail(e, &h, ""))?;
            Ok(empty())
        }
        Route::Metrics(h) => {
            let c = container(ctx, &h).await?;
            let resp = c
                .metrics_request()
                .send()
                .promise
                .await
                .map_err(|e| g.fail(e, &h, ""))?;
            translate::metrics(
                resp.get()
                    .and_then(|r| r.get_metrics())
                    .map_err(|e| g.fail(e, &h, ""))?,
            )
        }
        Route::StreamIn(_)
        | Route::StreamOut(_)
        | Route::Run(_)
        | Route::Attach(..)
        | Route::Output(..) => Err(GardenError::internal(
            "a streaming route reached the JSON handler",
        )),
    }
}

/// BulkInfo/BulkMetrics: `?handles=a,b` → {handle: {"Info"|"Metrics": …,
/// "Err": null | error body}} (garden.ContainerInfoEntry and
/// ContainerMetricsEntry).
async fn bulk(ctx: &Ctx, req: &Request, metrics: bool) -> R<Value> {
    let g = &ctx.grove;
    let handles: Vec<String> = req
        .query("handles")
        .unwrap_or("")
        .split(',')
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect();
    let client = g.client().await?;
    let mut out = Map::new();
    let entry = |key: &str, value: R<Value>| -> Value {
        let (v, err) = match value {
            Ok(v) => (v, Value::Null),
            Err(e) => (json!({}), e.body()),
        };
        let mut m = Map::new();
        m.insert(key.to_string(), v);
        m.insert("Err".to_string(), err);
        Value::Object(m)
    };
    if metrics {
        let mut r = client.grove.bulk_metrics_request();
        grove_client::fill_text_list(r.get().init_handles(handles.len() as u32), &handles);
        let resp = r.send().promise.await.map_err(|e| g.fail(e, "", ""))?;
        for result in resp
            .get()
            .and_then(|r| r.get_results())
            .map_err(|e| g.fail(e, "", ""))?
        {
            let handle = text(result.get_handle())?;
            let value = match result.which() {
                Ok(api::metrics_result::Metrics(m)) => m
                    .map_err(|e| g.fail(e, &handle, ""))
                    .and_then(translate::metrics),
                Ok(api::metrics_result::Error(t)) => Err(GardenError::from_grove(
                    &translate::coded_error(&text(t)?),
                    &handle,
                    "",
                )),
                Err(e) => Err(GardenError::internal(e.to_string())),
            };
            out.insert(handle.clone(), entry("Metrics", value));
        }
    } else {
        let mut r = client.grove.bulk_info_request();
        grove_client::fill_text_list(r.get().init_handles(handles.len() as u32), &handles);
        let resp = r.send().promise.await.map_err(|e| g.fail(e, "", ""))?;
        for result in resp
            .get()
            .and_then(|r| r.get_results())
            .map_err(|e| g.fail(e, "", ""))?
        {
            let handle = text(result.get_handle())?;
            let value = match result.which() {
                Ok(api::info_result::Info(i)) => i
                    .map_err(|e| g.fail(e, &handle, ""))
                    .and_then(translate::info),
                Ok(api::info_result::Error(t)) => Err(GardenError::from_grove(
                    &translate::coded_error(&text(t)?),
                    &handle,
                    "",
                )),
                Err(e) => Err(GardenError::internal(e.to_string())),
            };
            out.insert(handle.clone(), entry("Info", value));
        }
    }
    Ok(Value::Object(out))
}

fn text(t: capnp::Result<capnp::text::Reader<'_>>) -> R<String> {
    t.map_err(|e| GardenError::internal(e.to_string()))?
        .to_string()
        .map_err(|e| GardenError::internal(e.to_string()))
}

//! The HTTP front: records each request, injects faults and stalls, dispatches by path.

use super::*;

pub(super) async fn handle(
    State(state): State<Arc<Mutex<DoubleState>>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = parse_query(uri.query());
    let body_text = String::from_utf8_lossy(&body).into_owned();
    let stall = {
        let mut st = state.lock().unwrap();
        st.requests.push(RecordedRequest {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            body: body_text.clone(),
        });
        st.take_stall(method.as_str(), &path)
    };
    if let Some(delay) = stall {
        tokio::time::sleep(delay).await;
    }
    let mut st = state.lock().unwrap();
    if let Some(f) = st.take_fault(method.as_str(), &path, false) {
        return error_response(
            f.status,
            &f.reason,
            &format!("Injected {} on {} {}", f.status, method, path),
        );
    }
    let response = route(&mut st, &method, &path, &query, &body_text);
    if response.status().is_success() {
        if let Some(f) = st.take_fault(method.as_str(), &path, true) {
            return error_response(
                f.status,
                &f.reason,
                &format!("Injected {} after applying {} {}", f.status, method, path),
            );
        }
    }
    response
}

pub(super) fn route(
    st: &mut DoubleState,
    method: &Method,
    path: &str,
    query: &[(String, String)],
    body: &str,
) -> Response {
    let Some(rest) = path.strip_prefix("/compute/v1/projects/") else {
        return error_response(
            404,
            "notFound",
            &format!("The double has no route for {path}"),
        );
    };
    let segs: Vec<&str> = rest.split('/').collect();
    let param = |n: &str| query_param(query, n);
    let not_found = |what: &str| {
        error_response(
            404,
            "notFound",
            &format!("The resource '{what}' was not found"),
        )
    };
    let wrong_method = || {
        error_response(
            405,
            "httpMethodNotAllowed",
            &format!("{method} is not allowed on {path}"),
        )
    };
    match segs.as_slice() {
        [p, kind @ ("zones" | "regions"), loc, "instanceGroupManagers", name, tail @ ..] => {
            let g_key = format!("projects/{p}/{kind}/{loc}/instanceGroupManagers/{name}");
            if !st.groups.contains_key(&g_key) {
                return not_found(&g_key);
            }
            match (tail, method) {
                ([], &Method::GET) => ok_json(st.group_json(&st.groups[&g_key])),
                (["resize"], &Method::POST) => {
                    let Some(size) = param("size").and_then(|s| s.parse::<i64>().ok()) else {
                        return error_response(
                            400,
                            "required",
                            "Required field 'size' not specified",
                        );
                    };
                    if size < 0 {
                        return error_response(
                            400,
                            "invalid",
                            "Invalid value for field 'size': must be >= 0",
                        );
                    }
                    let rid = param("requestId").map(str::to_string);
                    reply(st.resize(&g_key, size as u32, rid.as_deref()))
                }
                (["deleteInstances"], &Method::POST) => {
                    let v = match json_body(body) {
                        Ok(v) => v,
                        Err(r) => return *r,
                    };
                    let rid = param("requestId").map(str::to_string);
                    reply(st.delete_instances(&g_key, &v, rid.as_deref()))
                }
                (
                    [m @ ("suspendInstances" | "resumeInstances" | "stopInstances"
                    | "startInstances")],
                    &Method::POST,
                ) => {
                    let v = match json_body(body) {
                        Ok(v) => v,
                        Err(r) => return *r,
                    };
                    let rid = param("requestId").map(str::to_string);
                    reply(st.standby_call(&g_key, m, &v, rid.as_deref()))
                }
                (["listManagedInstances"], &Method::POST) => {
                    if param("pageToken").is_none() {
                        st.settle_standby(&g_key);
                    }
                    reply(st.list_managed(&g_key, query))
                }
                (["listErrors"], &Method::GET) => reply(st.list_errors(&g_key, query)),
                (
                    []
                    | ["resize"]
                    | ["deleteInstances"]
                    | ["listManagedInstances"]
                    | ["suspendInstances"]
                    | ["resumeInstances"]
                    | ["stopInstances"]
                    | ["startInstances"]
                    | ["listErrors"],
                    _,
                ) => wrong_method(),
                _ => error_response(
                    404,
                    "notFound",
                    &format!("The double has no route for {path}"),
                ),
            }
        }
        [p, "zones", z, "operations"] => {
            if method != Method::GET {
                return wrong_method();
            }
            reply(st.list_zone_operations(p, z, query))
        }
        [p, "zones", z, "instances"] => {
            if method != Method::GET {
                return wrong_method();
            }
            reply(st.list_instances(p, z, query))
        }
        [p, "zones", z, "instances", n, "setMetadata"] => {
            if method != Method::POST {
                return wrong_method();
            }
            let v = match json_body(body) {
                Ok(v) => v,
                Err(r) => return *r,
            };
            let key = (p.to_string(), z.to_string(), n.to_string());
            let rid = param("requestId").map(str::to_string);
            reply(st.set_metadata(&key, &v, rid.as_deref()))
        }
        [p, "zones", z, "instances", n, "getGuestAttributes"] => {
            if method != Method::GET {
                return wrong_method();
            }
            let key = (p.to_string(), z.to_string(), n.to_string());
            reply(st.guest_attributes(&key, query))
        }
        [p, "zones", z, "instances", n] => {
            if method != Method::GET {
                return wrong_method();
            }
            let key = (p.to_string(), z.to_string(), n.to_string());
            match st.instances.get(&key) {
                Some(i) => ok_json(st.instance_json(&key, i)),
                None => not_found(&format!("projects/{p}/zones/{z}/instances/{n}")),
            }
        }
        [p, kind @ ("zones" | "regions"), loc, "operations", op, tail @ ..] => {
            let key = (format!("projects/{p}/{kind}/{loc}"), op.to_string());
            if !st.operations.contains_key(&key) {
                return not_found(&format!("projects/{p}/{kind}/{loc}/operations/{op}"));
            }
            match (tail, method) {
                ([], &Method::GET) => {
                    let o = st.operations.get_mut(&key).unwrap();
                    if !o.done {
                        o.polls_left = o.polls_left.saturating_sub(1);
                        if o.polls_left == 0 {
                            st.finish_operation(&key);
                        }
                    }
                    ok_json(st.operations[&key].json.clone())
                }
                (["wait"], &Method::POST) => {
                    st.finish_operation(&key);
                    ok_json(st.operations[&key].json.clone())
                }
                _ => wrong_method(),
            }
        }
        _ => error_response(
            404,
            "notFound",
            &format!("The double has no route for {path}"),
        ),
    }
}

/// A JSON request body, or Compute's answer to one that is not JSON.
fn json_body(body: &str) -> Result<Value, Box<Response>> {
    serde_json::from_str(body).map_err(|_| {
        Box::new(error_response(
            400,
            "parseError",
            "This API does not support parsing form-encoded input.",
        ))
    })
}

//! Bad API input is refused with the right status, error code and field, and leaves no
//! trace: the API state is unchanged and no sandbox namespace appears.

use netd_tests::views::ErrorBody;
use netd_tests::*;
use serde_json::{json, Value};

/// What must be true after a refused request: exactly what was true before it.
#[derive(Debug, PartialEq)]
struct Snapshot {
    networks: Vec<Value>,
    endpoints: Vec<Value>,
    sandboxes: Vec<String>,
    container_links: Vec<String>,
}

fn snapshot(cluster: &Cluster, containers: &[&Container]) -> Snapshot {
    let node = cluster.node(1);
    let sorted = |path: &str| {
        let mut list: Vec<Value> = node.get(path);
        list.sort_by_key(|v| v["name"].to_string() + &v["id"].to_string());
        list
    };
    Snapshot {
        networks: sorted("/v1/networks"),
        endpoints: sorted("/v1/endpoints"),
        sandboxes: cluster.sandboxes(),
        container_links: containers
            .iter()
            .flat_map(|c| {
                netd_tests::kernel::links(&c.name)
                    .unwrap()
                    .into_keys()
                    .map(|l| format!("{}/{l}", c.name))
            })
            .collect(),
    }
}

struct Rejected<'a> {
    what: &'a str,
    method: &'a str,
    path: String,
    body: String,
    status: u16,
    code: &'a str,
    /// `None`: the error is about no particular field (e.g. unparsable JSON).
    field: Option<&'a str>,
}

/// Sends the request; describes every way the answer or the state after it is wrong.
fn check_rejected(cluster: &Cluster, containers: &[&Container], case: &Rejected) -> Vec<String> {
    let before = snapshot(cluster, containers);
    let r = cluster
        .node(1)
        .api_raw(case.method, &case.path, Some(&case.body));
    let ctx = format!(
        "[{}] {} {} {}\n    -> {} {}",
        case.what, case.method, case.path, case.body, r.status, r.body
    );
    let mut problems = Vec::new();
    if r.status != case.status {
        problems.push(format!("status {} (want {}); {ctx}", r.status, case.status));
    }
    match serde_json::from_value::<ErrorBody>(r.json.clone()) {
        Err(e) => problems.push(format!("error body shape ({e}); {ctx}")),
        Ok(err) => {
            if err.error.code != case.code {
                problems.push(format!(
                    "code {:?} (want {:?}); {ctx}",
                    err.error.code, case.code
                ));
            }
            if case.field.is_some() && err.error.field.as_deref() != case.field {
                problems.push(format!(
                    "field {:?} (want {:?}); {ctx}",
                    err.error.field, case.field
                ));
            }
            if err.error.message.is_empty() {
                problems.push(format!("empty message; {ctx}"));
            }
        }
    }
    let after = snapshot(cluster, containers);
    if before != after {
        problems.push(format!(
            "state changed by a refused request: {before:?} -> {after:?}; {ctx}"
        ));
    }
    problems
}

/// Checks a single refusal.
#[track_caller]
fn assert_rejected(cluster: &Cluster, containers: &[&Container], case: Rejected) {
    let problems = check_rejected(cluster, containers, &case);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Checks every case (so one run reports all of them), then fails listing the problems.
#[track_caller]
fn assert_all_rejected(
    cluster: &Cluster,
    containers: &[&Container],
    cases: Vec<Rejected>,
    after_each: impl Fn(&Rejected) -> Option<String>,
) {
    let mut problems = Vec::new();
    let total = cases.len();
    for case in &cases {
        problems.extend(check_rejected(cluster, containers, case));
        problems.extend(after_each(case));
    }
    assert!(
        problems.is_empty(),
        "{} problem(s) over {total} refused requests:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

fn net(
    what: &'static str,
    name: &str,
    body: &str,
    status: u16,
    field: Option<&'static str>,
) -> Rejected<'static> {
    Rejected {
        what,
        method: "PUT",
        path: format!("/v1/networks/{name}"),
        body: body.to_string(),
        status,
        code: match status {
            400 => "invalid",
            404 => "not_found",
            _ => "conflict",
        },
        field,
    }
}

#[test]
fn bad_network_requests_are_refused_and_change_nothing() {
    let Some(cluster) = Cluster::new(1) else {
        return;
    };
    let n1 = cluster.node(1);
    let good = json!({"subnet": "10.240.1.0/24", "vni": 5001});
    let (status, body) = n1.api("PUT", "/v1/networks/good", Some(&good));
    assert!(status == 200 || status == 201, "create: {status} {body}");
    // Idempotent: the same spec again is a plain 200 and changes nothing.
    let before = snapshot(&cluster, &[]);
    let (status, body) = n1.api("PUT", "/v1/networks/good", Some(&good));
    assert_eq!(status, 200, "repeat PUT: {body}");
    assert_eq!(before, snapshot(&cluster, &[]), "repeat PUT changed state");
    assert!(cluster.sandboxes().is_empty(), "sandbox without endpoints");

    let cases = [
        net(
            "malformed JSON",
            "bad1",
            r#"{"subnet": "10.240.2.0/24", "vni": "#,
            400,
            None,
        ),
        net("not an object", "bad1", r#"[1, 2]"#, 400, None),
        net(
            "prefix length 33",
            "bad1",
            r#"{"subnet": "10.240.2.0/33", "vni": 5002}"#,
            400,
            Some("subnet"),
        ),
        net(
            "octet 300",
            "bad1",
            r#"{"subnet": "10.240.2.300/24", "vni": 5002}"#,
            400,
            Some("subnet"),
        ),
        net(
            "not a CIDR",
            "bad1",
            r#"{"subnet": "banana", "vni": 5002}"#,
            400,
            Some("subnet"),
        ),
        net(
            "overlap: supernet",
            "bad1",
            r#"{"subnet": "10.240.0.0/16", "vni": 5002}"#,
            409,
            Some("subnet"),
        ),
        net(
            "overlap: subnet",
            "bad1",
            r#"{"subnet": "10.240.1.128/25", "vni": 5002}"#,
            409,
            Some("subnet"),
        ),
        net(
            "VNI 0",
            "bad1",
            r#"{"subnet": "10.240.2.0/24", "vni": 0}"#,
            400,
            Some("vni"),
        ),
        net(
            "VNI 4095",
            "bad1",
            r#"{"subnet": "10.240.2.0/24", "vni": 4095}"#,
            400,
            Some("vni"),
        ),
        net(
            "VNI 2^24",
            "bad1",
            r#"{"subnet": "10.240.2.0/24", "vni": 16777216}"#,
            400,
            Some("vni"),
        ),
        net(
            "VNI negative",
            "bad1",
            r#"{"subnet": "10.240.2.0/24", "vni": -5}"#,
            400,
            Some("vni"),
        ),
        net(
            "VNI taken",
            "bad1",
            r#"{"subnet": "10.240.2.0/24", "vni": 5001}"#,
            409,
            Some("vni"),
        ),
        net(
            "gateway outside",
            "bad1",
            r#"{"subnet": "10.240.2.0/24", "gateway": "10.240.3.1", "vni": 5002}"#,
            400,
            Some("gateway"),
        ),
        net(
            "VNI as string",
            "bad1",
            r#"{"subnet": "10.240.2.0/24", "vni": "5002"}"#,
            400,
            Some("vni"),
        ),
        net(
            "subnet as number",
            "bad1",
            r#"{"subnet": 42, "vni": 5002}"#,
            400,
            Some("subnet"),
        ),
        net(
            "internal as string",
            "bad1",
            r#"{"subnet": "10.240.2.0/24", "vni": 5002, "internal": "yes"}"#,
            400,
            Some("internal"),
        ),
        net(
            "labels as list",
            "bad1",
            r#"{"subnet": "10.240.2.0/24", "vni": 5002, "labels": [1]}"#,
            400,
            Some("labels"),
        ),
        net(
            "missing vni",
            "bad1",
            r#"{"subnet": "10.240.2.0/24"}"#,
            400,
            Some("vni"),
        ),
        net(
            "unknown field",
            "bad1",
            r#"{"subnet": "10.240.2.0/24", "vni": 5002, "colour": "blue"}"#,
            400,
            Some("colour"),
        ),
    ];
    assert_all_rejected(&cluster, &[], cases.into(), |case| {
        let (status, _) = n1.api("GET", "/v1/networks/bad1", None);
        (status != 404).then(|| format!("[{}] refused network exists anyway", case.what))
    });

    let (status, body) = n1.api("GET", "/v1/networks/never-made", None);
    assert_eq!(status, 404, "GET unknown network: {body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
}

#[test]
fn bad_endpoint_requests_are_refused_and_change_nothing() {
    let Some(cluster) = Cluster::new(1) else {
        return;
    };
    let n1 = cluster.node(1);
    cluster.create_network("good", &json!({"subnet": "10.240.1.0/24", "vni": 5001}));
    let c1 = cluster.container();
    let c2 = cluster.container();
    let spec = |network: &str, c: &Container, extra: &str| {
        format!(
            r#"{{"network": "{network}", "netns": "{}", "ifname": "eth0", "name": "{}"{extra}}}"#,
            c.path().display(),
            c.name
        )
    };
    let ep = |what, c: &Container, body: String, status: u16, field| Rejected {
        what,
        method: "PUT",
        path: format!("/v1/endpoints/{}", c.endpoint_id("eth0")),
        body,
        status,
        code: match status {
            400 => "invalid",
            404 => "not_found",
            _ => "conflict",
        },
        field,
    };
    let both = [&c1, &c2];
    let cases = [
        ep(
            "unknown network",
            &c1,
            spec("nope", &c1, ""),
            404,
            Some("network"),
        ),
        ep(
            "malformed JSON",
            &c1,
            spec("good", &c1, "").replace('}', ""),
            400,
            None,
        ),
        ep(
            "ip not an address",
            &c1,
            spec("good", &c1, r#", "ip": "10.240.1.999""#),
            400,
            Some("ip"),
        ),
        ep(
            "ip as number",
            &c1,
            spec("good", &c1, r#", "ip": 7"#),
            400,
            Some("ip"),
        ),
        ep(
            "ip outside subnet",
            &c1,
            spec("good", &c1, r#", "ip": "10.99.0.5""#),
            400,
            Some("ip"),
        ),
        ep(
            "ifname as number",
            &c1,
            spec("good", &c1, "").replace(r#""eth0""#, "3"),
            400,
            Some("ifname"),
        ),
        ep(
            "aliases as string",
            &c1,
            spec("good", &c1, r#", "aliases": "x""#),
            400,
            Some("aliases"),
        ),
        ep(
            "unknown field",
            &c1,
            spec("good", &c1, r#", "colour": "blue""#),
            400,
            Some("colour"),
        ),
    ];
    assert_all_rejected(&cluster, &both, cases.into(), |_| None);
    assert!(
        cluster.sandboxes().is_empty(),
        "sandbox appeared for refused endpoints"
    );

    // IP already in use: the second claim of 10.240.1.10 is refused and c2 stays empty.
    let first = n1.attach(&c1, "good", "eth0", Some(json!({"ip": "10.240.1.10"})));
    assert_eq!(first.ip.to_string(), "10.240.1.10");
    assert_rejected(
        &cluster,
        &both,
        ep(
            "IP in use",
            &c2,
            spec("good", &c2, r#", "ip": "10.240.1.10""#),
            409,
            Some("ip"),
        ),
    );

    // PATCH: the documented body works, a wrongly typed one is refused.
    let path = format!("/v1/endpoints/{}", first.id);
    let (status, body) = n1.api("PATCH", &path, Some(&json!({"service_disabled": true})));
    assert!(status == 200 || status == 204, "PATCH: {status} {body}");
    let (_, view) = n1.api("GET", &path, None);
    assert_eq!(view["service_disabled"], true, "PATCH not applied: {view}");
    assert_rejected(
        &cluster,
        &both,
        Rejected {
            what: "PATCH wrong type",
            method: "PATCH",
            path: path.clone(),
            body: r#"{"service_disabled": "yes"}"#.into(),
            status: 400,
            code: "invalid",
            field: Some("service_disabled"),
        },
    );

    // A network with endpoints is only deleted by force, and force takes them along.
    assert_rejected(
        &cluster,
        &both,
        Rejected {
            what: "DELETE busy network",
            method: "DELETE",
            path: "/v1/networks/good".into(),
            body: String::new(),
            status: 409,
            code: "conflict",
            field: None,
        },
    );
    let (status, body) = n1.api("DELETE", "/v1/networks/good?force=true", None);
    assert!(
        status == 200 || status == 204,
        "forced DELETE: {status} {body}"
    );
    let (status, _) = n1.api("GET", "/v1/networks/good", None);
    assert_eq!(status, 404, "network survived forced DELETE");
    assert!(
        n1.endpoints().iter().all(|e| e.network != "good"),
        "endpoints of a deleted network remain"
    );
    eventually(CONVERGE, "sandbox removed with its network", || {
        let s = cluster.sandboxes();
        if s.is_empty() {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    });
}

#[test]
fn bad_cluster_requests_are_refused() {
    let Some(cluster) = Cluster::new(1) else {
        return;
    };
    let n1 = cluster.node(1);
    let tags = n1.node_view().gossip_key_tags;
    let keys = |body: &str| Rejected {
        what: "bad keys",
        method: "PUT",
        path: "/v1/cluster/keys".into(),
        body: body.into(),
        status: 400,
        code: "invalid",
        field: Some("keys"),
    };
    let cases: Vec<Rejected> = [
        r#"{"keys": []}"#,
        r#"{"keys": ["a", "b", "c", "d"]}"#,
        r#"{"keys": "a"}"#,
    ]
    .into_iter()
    .map(keys)
    .collect();
    assert_all_rejected(&cluster, &[], cases, |case| {
        let now = n1.node_view().gossip_key_tags;
        (now != tags).then(|| format!("[{}] {} changed the keys: {now:?}", case.what, case.body))
    });

    // The API describes itself.
    let (status, spec) = n1.api("GET", "/v1/openapi.json", None);
    assert_eq!(status, 200);
    assert!(
        spec.get("openapi").is_some(),
        "not an OpenAPI document: {spec}"
    );
    assert!(
        spec["paths"].get("/v1/networks/{name}").is_some(),
        "openapi paths: {}",
        spec["paths"]
    );
}

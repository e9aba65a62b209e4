//! Who may use the API socket: mode 0600, and a peer-credential check behind it, so even a
//! socket opened up by mistake (chmod 0666) does not serve other users.

use netd_tests::cmd::CmdOutput;
use netd_tests::*;
use std::os::unix::fs::PermissionsExt;

fn curl_as(uid: Option<u32>, socket: &std::path::Path) -> CmdOutput {
    let sock = socket.display().to_string();
    let mut args: Vec<String> = Vec::new();
    if let Some(u) = uid {
        args.extend([
            "--reuid".into(),
            u.to_string(),
            "--regid".into(),
            u.to_string(),
            "--clear-groups".into(),
        ]);
    }
    args.extend([
        "curl".into(),
        "-sS".into(),
        "--max-time".into(),
        "5".into(),
        "--unix-socket".into(),
        sock,
        "http://netd/v1/node".into(),
    ]);
    if uid.is_some() {
        run("setpriv", &args).expect("setpriv")
    } else {
        run("curl", &args).expect("curl")
    }
}

#[test]
fn api_socket_is_private_and_checks_peer_credentials() {
    let Some(cluster) = Cluster::new(1) else {
        return;
    };
    let n1 = cluster.node(1);
    let mode = std::fs::metadata(&n1.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "API socket mode {mode:o}");

    let root = curl_as(None, &n1.socket);
    assert!(
        root.success && root.stdout.contains("\"node\""),
        "root is served: {root:?}"
    );

    // nobody cannot even connect through the file mode...
    let denied = curl_as(Some(65534), &n1.socket);
    assert!(
        !denied.success && !denied.stdout.contains("\"node\""),
        "nobody served through 0600: {denied:?}"
    );
    // ...and with the mode opened up, the credential check still refuses it.
    std::fs::set_permissions(&n1.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let refused = curl_as(Some(65534), &n1.socket);
    assert!(
        !refused.success && !refused.stdout.contains("\"node\""),
        "peer credentials not checked: {refused:?}"
    );
    assert!(
        n1.log_tail(50).contains("peer credentials not allowed"),
        "refusal not logged"
    );
    // root still is, and netd is fine.
    assert!(curl_as(None, &n1.socket).success);
    assert!(n1.is_running());
}

//! A reload takes credentials rotated in place (same file paths, new contents), or refuses
//! and keeps the ones in force.

use std::path::Path;
use std::time::{Duration, Instant};

use cascade_runtime::Tensor;
use cascade_runtime::protocol::{EscalationRequest, NamedTensor};
use cascade_runtime::transport::certs::Role;
use cascade_runtime::transport::{ClientConfig, TierClient, TlsIdentity};
use cascade_testkit::{central, client, digits, fixture, resolve};
use edge_node::certs_cmd;
use edge_node::deployment::CENTRAL;
use edge_node::serve::Server;
use reqwest::StatusCode;

/// A CA in `dir`, and certificates for the central node and an edge from it.
fn pki(dir: &Path) {
    certs_cmd::init(dir, true).unwrap();
    certs_cmd::issue(dir, CENTRAL, Role::Central, dir, &[], true).unwrap();
    certs_cmd::issue(dir, "edge", Role::Edge, dir, &[], true).unwrap();
}

/// Whether an edge holding `dir`'s edge certificate (and trusting `dir`'s CA) gets an
/// answer from the central node's QUIC listener at `addr`.
async fn escalates(dir: &Path, addr: std::net::SocketAddr) -> bool {
    let identity =
        TlsIdentity::from_files(&dir.join("edge.pem"), &dir.join("edge.key"), &dir.join("ca.pem")).unwrap();
    let mut config = ClientConfig::new(addr, CENTRAL);
    config.connect_timeout = Duration::from_secs(2);
    let client = TierClient::new(&identity, config).unwrap();
    let image = Tensor::from_u8(vec![28, 28], digits().image(0).to_vec()).unwrap();
    let request = EscalationRequest {
        id: 1,
        route: "digits".into(),
        inputs: vec![NamedTensor { name: "image".into(), tensor: image }],
        budget_us: 0,
        trace: None,
        node_id: "edge".into(),
        local_confidence: None,
    };
    matches!(client.request(&request, Instant::now() + Duration::from_secs(5)).await, Ok(Ok(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_takes_certificates_and_tokens_rotated_in_place() {
    let root = fixture().dir.path().join("rotation");
    let (live, old, new) = (root.join("live"), root.join("old"), root.join("new"));
    pki(&old);
    pki(&new);
    // The node reads its credentials from `live`, which starts as a copy of `old`.
    let install = |from: &Path| {
        std::fs::create_dir_all(&live).unwrap();
        for file in ["ca.pem", "central.pem", "central.key"] {
            std::fs::copy(from.join(file), live.join(file)).unwrap();
        }
    };
    install(&old);
    let token_file = live.join("admin.token");
    let (old_token, new_token) = ("old-token-0123456789abcdef", "new-token-0123456789abcdef");
    std::fs::write(&token_file, old_token).unwrap();

    let mut node = central();
    let l = &mut node.node.listeners;
    l.quic_cert = Some(live.join("central.pem").display().to_string());
    l.quic_key = Some(live.join("central.key").display().to_string());
    l.quic_ca = Some(live.join("ca.pem").display().to_string());
    l.admin = Some("127.0.0.1:0".into());
    l.admin_token_file = Some(token_file.display().to_string());
    let server = Server::start(resolve("rotation.toml", &node)).await.unwrap();
    let quic = server.quic_addr().unwrap();
    let admin = server.admin_addr().unwrap();
    let c = client();
    let mode = |token: &'static str| {
        let c = c.clone();
        async move {
            let r = c.get(format!("http://{admin}/admin/mode")).bearer_auth(token).send().await.unwrap();
            r.status()
        }
    };
    assert!(escalates(&old, quic).await);
    assert!(!escalates(&new, quic).await);
    assert_eq!(mode(old_token).await, StatusCode::OK);

    // Rotate everything in place, then reload the same config.
    install(&new);
    std::fs::write(&token_file, new_token).unwrap();
    server.reload(resolve("rotation.toml", &node)).await.unwrap();
    assert!(escalates(&new, quic).await, "the rotated certificate and CA are not in force");
    assert!(!escalates(&old, quic).await, "the old CA is still trusted");
    assert_eq!(mode(new_token).await, StatusCode::OK);
    assert_eq!(mode(old_token).await, StatusCode::UNAUTHORIZED, "the old token still works");

    // A bad token file refuses the whole reload, naming it; what was in force stays.
    std::fs::write(&token_file, "short").unwrap();
    let err = server.reload(resolve("rotation.toml", &node)).await.unwrap_err();
    assert!(format!("{err:#}").contains("admin_token_file"), "{err:#}");
    assert_eq!(mode(new_token).await, StatusCode::OK);
    // So does a certificate file that is not one.
    std::fs::write(&token_file, new_token).unwrap();
    std::fs::write(live.join("central.pem"), "not a certificate").unwrap();
    let err = server.reload(resolve("rotation.toml", &node)).await.unwrap_err();
    assert!(format!("{err:#}").contains("quic_cert"), "{err:#}");
    assert!(escalates(&new, quic).await);
    server.shutdown().await.unwrap();
}

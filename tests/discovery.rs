//! `[servers] discover`: the allowlist learnt from a fake Pinot controller, refreshed while the
//! proxy runs; discovered ports, the controller going down, readiness, tags and credentials.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::*;

/// A proxy discovering from `controller` every 100 ms, with extra `[servers]` keys and extra
/// sections. `allow = ["127.0.0.1"]` only exempts the loopback address the fakes listen on
/// from the special-range check; `ports = [9]` keeps the static list itself from allowing
/// them, so only discovery lets calls through.
fn config(controller: &FakeController, servers_keys: &str, sections: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndrain_delay_ms = 0\n\
         [servers]\nallow = [\"127.0.0.1\"]\nports = [9]\ndiscover = true\n\
         discover_interval_ms = 100\ndiscover_timeout_ms = 2000\n{servers_keys}\n\
         [controller]\nurls = [\"{}\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n{sections}\n",
        controller.url()
    )
}

async fn admin_get(admin: SocketAddr, path: &str) -> (u16, String) {
    let response = http1_get(admin, path, &[]).await;
    let status = response.status().as_u16();
    (
        status,
        String::from_utf8_lossy(response.body()).into_owned(),
    )
}

/// Polls `path` on the admin port until `done` holds for its body.
async fn admin_until(admin: SocketAddr, path: &str, done: impl Fn(u16, &str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = admin_get(admin, path).await;
        if done(status, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} stayed at {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts the proxy and waits for its first server list.
async fn start(config: &str) -> Proxy {
    let proxy = start_proxy_config(config).await;
    admin_until(proxy.admin.unwrap(), "/readyz", |status, _| status == 200).await;
    proxy
}

/// A Submit naming 127.0.0.1:`port` through the proxy.
async fn call(proxy: &Proxy, port: u16) -> Result<usize, tonic::Status> {
    submit_all(
        channel(proxy.addr).await,
        trino_request("blocks:1:10:1", port),
    )
    .await
    .map(|responses| responses.len())
}

fn assert_denied(result: Result<usize, tonic::Status>, fake: &FakeServer) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert_eq!(
        fake.seen.accepted.get(),
        0,
        "a refused server is never dialled"
    );
}

#[tokio::test]
async fn a_new_server_becomes_reachable_without_restart() {
    let (a, b) = (start_fake("a").await, start_fake("b").await);
    let controller = start_controller(vec![Instance::server("127.0.0.1", a.port())]).await;
    let proxy = start(&config(&controller, "", "")).await;
    assert_eq!(call(&proxy, a.port()).await.unwrap(), 2);
    assert_denied(call(&proxy, b.port()).await, &b);

    controller.set(vec![
        Instance::server("127.0.0.1", a.port()),
        Instance::server("127.0.0.1", b.port()),
    ]);
    controller.next_refresh().await;
    assert_eq!(call(&proxy, b.port()).await.unwrap(), 2);
    let targets = admin_get(proxy.admin.unwrap(), "/debug/targets").await.1;
    assert!(
        targets.contains("\"discovery\":{\"servers\":2,\"age_ms\":"),
        "{targets}"
    );
    assert!(targets.contains("\"last_error\":null}"), "{targets}");
}

#[tokio::test]
async fn a_removed_server_is_refused_once_its_calls_end() {
    let a = start_fake("a").await;
    let controller = start_controller(vec![Instance::server("127.0.0.1", a.port())]).await;
    let proxy = start(&config(&controller, "", "")).await;
    let mut stream = pinot_client(channel(proxy.addr).await)
        .submit(trino_request("slow:40:100", a.port()))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());

    controller.set(vec![]);
    controller.next_refresh().await;
    // The call in flight (4 s) goes on to its end on its connection, which then closes.
    assert_eq!(a.seen.closed.get(), 0);
    let mut messages = 1;
    while stream.message().await.unwrap().is_some() {
        messages += 1;
    }
    assert_eq!(messages, 41);
    drop(stream);
    a.seen.closed.wait_for(1).await;
    let status = call(&proxy, a.port()).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("no server on that host"),
        "{status:?}"
    );
    assert_eq!(
        a.seen.accepted.get(),
        1,
        "nothing dialled for the refused call"
    );
}

#[tokio::test]
async fn an_idle_connection_to_a_removed_server_closes_at_once() {
    let (a, b) = (start_fake("a").await, start_fake("b").await);
    let controller = start_controller(vec![
        Instance::server("127.0.0.1", a.port()),
        Instance::server("127.0.0.1", b.port()),
    ])
    .await;
    let proxy = start(&config(&controller, "", "")).await;
    call(&proxy, a.port()).await.unwrap();
    call(&proxy, b.port()).await.unwrap();
    controller.set(vec![Instance::server("127.0.0.1", b.port())]);
    a.seen.closed.wait_for(1).await;
    assert_eq!(
        b.seen.closed.get(),
        0,
        "a server still listed keeps its connection"
    );
    assert_denied_after_use(call(&proxy, a.port()).await);
    assert_eq!(a.seen.accepted.get(), 1);
}

fn assert_denied_after_use(result: Result<usize, tonic::Status>) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
}

#[tokio::test]
async fn disabled_and_queries_disabled_servers_are_refused() {
    let (a, b, c, d) = (
        start_fake("a").await,
        start_fake("b").await,
        start_fake("c").await,
        start_fake("d").await,
    );
    let disabled = Instance {
        enabled: false,
        ..Instance::server("127.0.0.1", a.port())
    };
    let out_of_queries = Instance {
        queries_disabled: true,
        ..Instance::server("127.0.0.1", b.port())
    };
    // No gRPC port: the port in its id (`c`'s here) must not be mistaken for one.
    let no_grpc = Instance {
        grpc_port: -1,
        name: format!("Server_127.0.0.1_{}", c.port()),
        ..Instance::server("127.0.0.1", c.port())
    };
    let controller = start_controller(vec![
        disabled,
        out_of_queries,
        no_grpc,
        Instance::server("127.0.0.1", d.port()),
    ])
    .await;
    let proxy = start(&config(&controller, "", "")).await;
    assert_eq!(call(&proxy, d.port()).await.unwrap(), 2);
    assert_denied(call(&proxy, a.port()).await, &a);
    assert_denied(call(&proxy, b.port()).await, &b);
    assert_denied(call(&proxy, c.port()).await, &c);
    let targets = admin_get(proxy.admin.unwrap(), "/debug/targets").await.1;
    assert!(
        targets.contains("\"discovery\":{\"servers\":1,"),
        "{targets}"
    );
}

#[tokio::test]
async fn use_discovered_port_sends_the_call_to_the_servers_own_port() {
    let a = start_fake("a").await;
    let controller = start_controller(vec![Instance::server("127.0.0.1", a.port())]).await;
    // Trino names one port for every server; nothing is dialled on it.
    let named = if a.port() == 8090 { 8091 } else { 8090 };
    let plain = start(&config(&controller, "", "")).await;
    let status = call(&plain, named).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains(&format!("with gRPC port {}", a.port())),
        "{status:?}"
    );

    let mapping = start(&config(&controller, "use_discovered_port = true", "")).await;
    assert_eq!(call(&mapping, named).await.unwrap(), 2);
    assert_eq!(a.seen.request_count(), 1);
    let targets = admin_get(mapping.admin.unwrap(), "/debug/targets").await.1;
    assert!(
        targets.contains(&format!("\"target\":\"127.0.0.1:{}\"", a.port())),
        "{targets}"
    );

    // Two servers on one host: the named port must be one of theirs.
    let b = start_fake("b").await;
    controller.set(vec![
        Instance::server("127.0.0.1", a.port()),
        Instance::server("127.0.0.1", b.port()),
    ]);
    // Two proxies read this controller: wait on this one's own count.
    admin_until(mapping.admin.unwrap(), "/debug/targets", |_, body| {
        body.contains("\"servers\":2,")
    })
    .await;
    let status = call(&mapping, named).await.expect_err("ambiguous");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert_eq!(call(&mapping, b.port()).await.unwrap(), 2);
}

#[tokio::test]
async fn the_last_list_stays_while_the_controller_is_down_or_answers_garbage() {
    let captured = capture_logs();
    let (a, b) = (start_fake("a").await, start_fake("b").await);
    let controller = start_controller(vec![Instance::server("127.0.0.1", a.port())]).await;
    let proxy = start(&config(&controller, "", "")).await;
    let admin = proxy.admin.unwrap();

    for mode in [ControllerMode::Down, ControllerMode::Garbage] {
        controller.set_mode(mode);
        controller.next_refresh().await;
        controller.next_refresh().await;
        assert_eq!(call(&proxy, a.port()).await.unwrap(), 2, "{mode:?}");
        let targets = admin_get(admin, "/debug/targets").await.1;
        assert!(
            targets.contains("\"discovery\":{\"servers\":1,"),
            "{targets}"
        );
        let wanted = match mode {
            ControllerMode::Down => "HTTP 503",
            _ => "not an instance list",
        };
        assert!(targets.contains(wanted), "{targets}");
    }
    assert_eq!(
        admin_get(admin, "/readyz").await.0,
        200,
        "a stale list still serves"
    );
    let scrape = admin_get(admin, "/metrics").await.1;
    assert!(
        scrape.contains("pinot_proxy_discovery_refreshes_total{result=\"failed\"}"),
        "{scrape}"
    );
    assert!(
        scrape.contains("pinot_proxy_discovered_servers 1"),
        "{scrape}"
    );
    assert!(
        scrape.contains("pinot_proxy_discovery_last_success_timestamp_seconds 1"),
        "{scrape}"
    );

    controller.set(vec![
        Instance::server("127.0.0.1", a.port()),
        Instance::server("127.0.0.1", b.port()),
    ]);
    controller.set_mode(ControllerMode::Normal);
    controller.next_refresh().await;
    assert_eq!(call(&proxy, b.port()).await.unwrap(), 2);
    admin_until(admin, "/debug/targets", |_, body| {
        body.contains("\"servers\":2,") && body.contains("\"last_error\":null}")
    })
    .await;
    // One line for the whole outage, however many reads failed, and one for its end.
    let url = controller.url();
    let lines = captured.lines();
    let outage: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("cannot read the server list") && l.contains(&url))
        .collect();
    assert_eq!(outage.len(), 1, "{outage:#?}");
    let recovered = lines
        .iter()
        .filter(|l| l.contains("server list read again") && l.contains(&url))
        .count();
    assert_eq!(recovered, 1, "{lines:#?}");
}

#[tokio::test]
async fn before_the_first_list_calls_fail_as_not_loaded_and_readyz_says_starting() {
    let a = start_fake("a").await;
    let controller = start_controller(vec![Instance::server("127.0.0.1", a.port())]).await;
    controller.set_mode(ControllerMode::Down);
    let proxy = start_proxy_config(&config(&controller, "", "")).await;
    let admin = proxy.admin.unwrap();
    controller.lists.wait_for(1).await;
    assert_eq!(
        admin_get(admin, "/readyz").await,
        (503, "starting\n".into())
    );
    let status = call(&proxy, a.port()).await.expect_err("not loaded");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("server list not loaded yet"),
        "{status:?}"
    );
    assert_eq!(a.seen.accepted.get(), 0);
    admin_until(admin, "/debug/targets", |_, body| {
        body.contains("\"discovery\":{\"servers\":0,\"age_ms\":null,\"last_error\":\"")
    })
    .await;

    controller.set_mode(ControllerMode::Normal);
    admin_until(admin, "/readyz", |status, _| status == 200).await;
    assert_eq!(call(&proxy, a.port()).await.unwrap(), 2);
}

#[tokio::test]
async fn a_tag_filter_keeps_other_tenants_out() {
    let (a, b) = (start_fake("a").await, start_fake("b").await);
    let other = Instance {
        tags: vec!["OtherTenant_OFFLINE".into(), "OtherTenant_REALTIME".into()],
        ..Instance::server("127.0.0.1", b.port())
    };
    let controller = start_controller(vec![Instance::server("127.0.0.1", a.port()), other]).await;
    let keys = "discover_tags = [\"DefaultTenant_REALTIME\", \"DefaultTenant_OFFLINE\"]";
    let proxy = start(&config(&controller, keys, "")).await;
    assert_eq!(call(&proxy, a.port()).await.unwrap(), 2);
    assert_denied(call(&proxy, b.port()).await, &b);
}

#[tokio::test]
async fn controller_credentials_reach_the_controller() {
    let a = start_fake("a").await;
    let controller = start_controller(vec![Instance::server("127.0.0.1", a.port())]).await;
    let sections = "[controller.auth]\nusername = \"admin\"\n\
                    password_env = \"PINOT_PROXY_TEST_CONTROLLER_PASSWORD\"\n\
                    [auth]\nrest = \"required\"\n[[auth.users]]\nusername = \"trino\"\n\
                    password_env = \"PINOT_PROXY_TEST_USER_PASSWORD\"\n";
    let text = config(&controller, "", "").replace("[admin]", &format!("{sections}[admin]"));
    let proxy = start(&text).await;
    assert_eq!(call(&proxy, a.port()).await.unwrap(), 2);
    let seen = controller.authorization.lock().unwrap().clone();
    // base64("admin:c-pass"), on the list and on each instance.
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(
        seen.iter().all(|h| h == "Basic YWRtaW46Yy1wYXNz"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn discovery_without_a_controller_is_a_config_error() {
    let err = pinot_proxy::Config::parse(
        "[server]\nlisten = \"127.0.0.1:0\"\n[servers]\ndiscover = true\n",
    )
    .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("servers.discover") && text.contains("[controller] urls"),
        "{text}"
    );
}

#[tokio::test]
async fn controller_urls_are_tried_in_order_until_one_answers() {
    let a = start_fake("a").await;
    let controller = start_controller(vec![Instance::server("127.0.0.1", a.port())]).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let text = config(&controller, "", "").replace(
        &format!("urls = [\"{}\"]", controller.url()),
        &format!("urls = [\"{dead_url}\", \"{}\"]", controller.url()),
    );
    let proxy = start(&text).await;
    assert_eq!(call(&proxy, a.port()).await.unwrap(), 2);
    let targets = admin_get(proxy.admin.unwrap(), "/debug/targets").await.1;
    assert!(targets.contains("\"last_error\":null}"), "{targets}");
}

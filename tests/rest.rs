//! REST forwarding: Trino's controller and broker calls through the proxy, over HTTP/1.1 and
//! HTTP/2, to fake Pinot controllers and brokers (hyper HTTP/1.1 servers on 127.0.0.1:0 that
//! record what they received).

mod support;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Notify};

const CONTROLLER_AUTH: &str = "Basic Y29udHJvbGxlcjpzZWNyZXQ=";
const BROKER_AUTH: &str = "Basic YnJva2VyOnNlY3JldA==";
/// `/big` answers with this many chunks of `BIG_CHUNK` bytes: 10 MiB.
const BIG_CHUNKS: u64 = 160;
const BIG_CHUNK: usize = 64 * 1024;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// One request as a fake controller or broker received it.
#[derive(Clone, Debug)]
struct Got {
    method: Method,
    /// Path and query string.
    uri: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

#[derive(Clone)]
struct FakeState {
    name: &'static str,
    got: Arc<Mutex<Vec<Got>>>,
    accepted: Counter,
    /// Lets `/gated` send the rest of its body.
    gate: Arc<Notify>,
    /// Signalled when `/upload` has received the first bytes of its body.
    first_chunk: Arc<Notify>,
}

/// A fake Pinot controller or broker. What it answers depends on the path:
/// `/hang` never answers; `/stall-body` sends a head and one chunk, then nothing; `/big` sends
/// 10 MiB; `/gated` sends one chunk, waits for `gate`, then the rest; `/upload` reads the body
/// as it comes; `/status/{code}` answers with that status; `/debug/timeBoundary/…` is 404;
/// anything else 200 with `x-served-by: <name>` and some hop-by-hop headers.
struct FakeRest {
    addr: SocketAddr,
    state: FakeState,
    _stop: oneshot::Sender<()>,
}

impl FakeRest {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    fn count(&self) -> usize {
        self.state.got.lock().unwrap().len()
    }
    fn last(&self) -> Got {
        self.state
            .got
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request")
    }
}

async fn start_rest(name: &'static str) -> FakeRest {
    start_rest_on(name, 0).await
}

async fn start_rest_on(name: &'static str, port: u16) -> FakeRest {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = FakeState {
        name,
        got: Arc::default(),
        accepted: Counter::new(),
        gate: Arc::new(Notify::new()),
        first_chunk: Arc::new(Notify::new()),
    };
    let (stop, mut stopped) = oneshot::channel::<()>();
    let server_state = state.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                accepted = listener.accept() => accepted.unwrap(),
                _ = &mut stopped => return,
            };
            server_state.accepted.add();
            let state = server_state.clone();
            let service = hyper::service::service_fn(move |request| answer(state.clone(), request));
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    FakeRest {
        addr,
        state,
        _stop: stop,
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

fn stream_body<S>(stream: S) -> Body
where
    S: futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static,
{
    StreamBody::new(stream).boxed_unsync()
}

/// The bytes of `/big`.
fn big_chunk(index: u64) -> Bytes {
    Bytes::from(block(11, index, BIG_CHUNK))
}

async fn answer(
    state: FakeState,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let mut got = Got {
        method: parts.method.clone(),
        uri: parts
            .uri
            .path_and_query()
            .map(|pq| pq.to_string())
            .unwrap_or_default(),
        headers: parts.headers.clone(),
        body: Bytes::new(),
    };
    let response = Response::builder().header("x-served-by", state.name);
    if path == "/upload" {
        let mut body = body;
        let mut all = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                if all.is_empty() && !data.is_empty() {
                    state.first_chunk.notify_one();
                }
                all.extend_from_slice(&data);
            }
        }
        got.body = Bytes::from(all);
        let size = got.body.len();
        state.got.lock().unwrap().push(got);
        return Ok(response
            .body(full(format!("{{\"bytes\":{size}}}")))
            .unwrap());
    }
    got.body = body.collect().await.unwrap().to_bytes();
    state.got.lock().unwrap().push(got);
    let response = if path.starts_with("/hang") {
        std::future::pending::<()>().await;
        unreachable!()
    } else if path == "/stall-body" {
        let first = futures_util::stream::iter([Ok(Frame::data(Bytes::from_static(b"first")))]);
        response
            .body(stream_body(first.chain(futures_util::stream::pending())))
            .unwrap()
    } else if path == "/big" {
        let chunks = (0..BIG_CHUNKS).map(|i| Ok(Frame::data(big_chunk(i))));
        response
            .body(stream_body(futures_util::stream::iter(chunks)))
            .unwrap()
    } else if path == "/gated" {
        let gate = state.gate.clone();
        let first = futures_util::stream::iter([Ok(Frame::data(Bytes::from_static(b"first-")))]);
        let rest = futures_util::stream::once(async move {
            gate.notified().await;
            Ok(Frame::data(Bytes::from_static(b"rest")))
        });
        response.body(stream_body(first.chain(rest))).unwrap()
    } else if let Some(code) = path.strip_prefix("/status/") {
        response
            .status(code.parse::<u16>().unwrap())
            .body(full(format!("status {code} from {}", state.name)))
            .unwrap()
    } else if path.starts_with("/debug/timeBoundary/") {
        response
            .status(StatusCode::NOT_FOUND)
            .header("content-type", "application/json")
            .body(full(
                "{\"code\":404,\"error\":\"Cannot find time boundary for table: t\"}",
            ))
            .unwrap()
    } else {
        response
            .header("content-type", "application/json")
            .header("connection", "x-upstream-hop")
            .header("x-upstream-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("x-end-to-end", "kept")
            .body(full(format!("{{\"from\":\"{}\"}}", state.name)))
            .unwrap()
    };
    Ok(response)
}

/// A server that accepts connections and closes them at once, before reading a request.
async fn start_slammer() -> (SocketAddr, Counter, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Counter::new();
    let counter = accepted.clone();
    let (stop, mut stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    counter.add();
                    drop(accepted.unwrap());
                }
                _ = &mut stopped => return,
            }
        }
    });
    (addr, accepted, stop)
}

/// A port nothing listens on: bound, then released.
async fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// A config with the given `[controller]`, `[broker]` and `[rest]` text.
fn config(sections: &str) -> String {
    format!("[server]\nlisten = \"127.0.0.1:0\"\n[servers]\nallow = [\"127.0.0.1\"]\n{sections}")
}

/// A proxy with only `[controller]`, at `controller`.
async fn proxy_for_controller(controller: &FakeRest) -> Proxy {
    start_proxy_config(&config(&format!(
        "[controller]\nurls = [\"{}\"]\n",
        controller.url()
    )))
    .await
}

/// Both components, forwarding the caller's own credentials (Pinot checks them).
fn both(controller: &FakeRest, broker: &FakeRest) -> String {
    config(&format!(
        "[controller]\nurls = [\"{}\"]\n[controller.auth]\npass_through = true\n\
         [broker]\nurls = [\"{}\"]\n[broker.auth]\npass_through = true\n",
        controller.url(),
        broker.url()
    ))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Proto {
    Http1,
    /// h2c with prior knowledge, as gRPC clients connect.
    Http2,
}

/// One client connection to the proxy.
struct Client {
    addr: SocketAddr,
    proto: Proto,
    h1: Option<hyper::client::conn::http1::SendRequest<Body>>,
    h2: Option<hyper::client::conn::http2::SendRequest<Body>>,
}

/// A response read to its end.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn served_by(&self) -> &str {
        self.headers
            .get("x-served-by")
            .map_or("none", |v| v.to_str().unwrap())
    }
}

impl Client {
    async fn open(addr: SocketAddr, proto: Proto) -> Client {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let io = TokioIo::new(tcp);
        let mut client = Client {
            addr,
            proto,
            h1: None,
            h2: None,
        };
        match proto {
            Proto::Http1 => {
                let (sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
                tokio::spawn(connection);
                client.h1 = Some(sender);
            }
            Proto::Http2 => {
                let (sender, connection) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .unwrap();
                tokio::spawn(connection);
                client.h2 = Some(sender);
            }
        }
        client
    }

    /// A request in the form the protocol uses: origin form and `Host` for HTTP/1.1, an
    /// absolute URI (`:authority`) for HTTP/2.
    fn request(&self, method: Method, path_and_query: &str) -> http::request::Builder {
        match self.proto {
            Proto::Http1 => Request::builder()
                .method(method)
                .uri(path_and_query)
                .header("host", self.addr.to_string()),
            Proto::Http2 => Request::builder()
                .method(method)
                .uri(format!("http://{}{path_and_query}", self.addr)),
        }
    }

    async fn send(&mut self, request: Request<Body>) -> Response<Incoming> {
        let sent = async {
            match (&mut self.h1, &mut self.h2) {
                (Some(h1), _) => {
                    h1.ready().await.unwrap();
                    h1.send_request(request).await.unwrap()
                }
                (_, Some(h2)) => h2.send_request(request).await.unwrap(),
                _ => unreachable!(),
            }
        };
        tokio::time::timeout(WAIT, sent).await.expect("a response")
    }

    async fn call(
        &mut self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Answer {
        let mut request = self.request(method, path_and_query);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(full(body.to_vec())).unwrap();
        read(self.send(request).await).await
    }

    async fn get(&mut self, path_and_query: &str) -> Answer {
        self.call(Method::GET, path_and_query, &[], b"").await
    }
}

async fn read(response: Response<Incoming>) -> Answer {
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("the body ends")
        .expect("the body arrives whole")
        .to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

#[tokio::test]
async fn trinos_calls_reach_the_right_component_over_http1_and_http2() {
    let controller = start_rest("controller").await;
    let broker = start_rest("broker").await;
    let proxy = start_proxy_config(&both(&controller, &broker)).await;
    let query = br#"{"sql":"SELECT COUNT(*) FROM airlineStats WHERE Carrier = 'AA'"}"#;
    for proto in [Proto::Http1, Proto::Http2] {
        // Like Trino, every call on one keep-alive connection.
        let mut client = Client::open(proxy.addr, proto).await;
        // The wire doc's table, plus the query string forms.
        let cases = [
            (Method::GET, "/tables", "controller", StatusCode::OK),
            (
                Method::GET,
                "/tables/airlineStats/schema",
                "controller",
                StatusCode::OK,
            ),
            (
                Method::GET,
                "/tables/airlineStats/instances?type=broker&x=a%20b",
                "controller",
                StatusCode::OK,
            ),
            (
                Method::GET,
                "/instances/Broker_pinot-broker-0.pinot-broker-headless_8099",
                "controller",
                StatusCode::OK,
            ),
            (
                Method::GET,
                "/debug/routingTable/airlineStats",
                "broker",
                StatusCode::OK,
            ),
            (
                Method::GET,
                "/debug/timeBoundary/airlineStats",
                "broker",
                StatusCode::NOT_FOUND,
            ),
            (Method::POST, "/query/sql", "broker", StatusCode::OK),
            (
                Method::GET,
                "/query/sql?sql=SELECT%201",
                "broker",
                StatusCode::OK,
            ),
        ];
        for (method, path, to, status) in cases {
            let (target, other, auth) = if to == "controller" {
                (&controller, &broker, CONTROLLER_AUTH)
            } else {
                (&broker, &controller, BROKER_AUTH)
            };
            let body: &[u8] = if method == Method::POST { query } else { b"" };
            let (before, other_before) = (target.count(), other.count());
            let mut headers = vec![("authorization", auth), ("accept", "application/json")];
            if method == Method::POST {
                headers.push(("content-type", "application/json"));
            }
            let answer = client.call(method.clone(), path, &headers, body).await;
            let what = format!("{proto:?} {method} {path}");
            assert_eq!(answer.status, status, "{what}: {}", answer.text());
            assert_eq!(answer.served_by(), target.state.name, "{what}");
            assert_eq!(target.count(), before + 1, "{what}");
            assert_eq!(other.count(), other_before, "{what}");
            let got = target.last();
            assert_eq!(got.method, method, "{what}");
            assert_eq!(got.uri, path, "{what}");
            assert_eq!(&got.body[..], body, "{what}");
            assert_eq!(got.header("authorization"), Some(auth), "{what}");
            assert_eq!(got.header("accept"), Some("application/json"), "{what}");
            if method == Method::POST {
                assert_eq!(
                    got.header("content-type"),
                    Some("application/json"),
                    "{what}"
                );
            }
            if status == StatusCode::NOT_FOUND {
                // Trino reads this 404 as "no time boundary": it must stay a 404 from Pinot.
                assert!(
                    answer.text().contains("Cannot find time boundary"),
                    "{what}"
                );
            }
        }
    }
}

#[tokio::test]
async fn upstream_statuses_and_bodies_pass_through() {
    let controller = start_rest("controller").await;
    let broker = start_rest("broker").await;
    let proxy = start_proxy_config(&both(&controller, &broker)).await;
    let mut client = Client::open(proxy.addr, Proto::Http1).await;
    for code in [401u16, 403, 500, 503] {
        let answer = client.get(&format!("/status/{code}")).await;
        assert_eq!(answer.status.as_u16(), code);
        assert_eq!(answer.text(), format!("status {code} from controller"));
    }
    let answer = client
        .call(Method::DELETE, "/tables/t?type=offline", &[], b"")
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(controller.last().method, Method::DELETE);
}

#[tokio::test]
async fn user_routes_take_precedence_at_segment_boundaries() {
    let controller = start_rest("controller").await;
    let broker = start_rest("broker").await;
    let text = format!(
        "{}[[rest.routes]]\nprefix = \"/tables/special\"\nto = \"broker\"\n\
         [[rest.routes]]\nprefix = \"/debug\"\nto = \"controller\"\n",
        both(&controller, &broker)
    );
    let proxy = start_proxy_config(&text).await;
    let mut client = Client::open(proxy.addr, Proto::Http2).await;
    for (path, served_by) in [
        ("/tables/special", "broker"),
        ("/tables/special/schema", "broker"),
        ("/tables/specialty/schema", "controller"),
        ("/tables/other", "controller"),
        // A user route beats the longer built-in `/debug/routingTable`.
        ("/debug/routingTable/t", "controller"),
        ("/query/sql", "broker"),
    ] {
        let answer = client.get(path).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert_eq!(answer.served_by(), served_by, "{path}");
    }
}

#[tokio::test]
async fn forwarded_headers_are_added_and_hop_by_hop_headers_dropped() {
    let controller = start_rest("controller").await;
    let proxy = proxy_for_controller(&controller).await;

    let mut client = Client::open(proxy.addr, Proto::Http1).await;
    let mut request = client
        .request(Method::GET, "/tables")
        .header("x-forwarded-for", "203.0.113.7")
        .header("connection", "keep-alive, x-client-hop")
        .header("x-client-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic cHJveHk6cHc=")
        .header("te", "gzip")
        .header("x-end-to-end", "kept")
        .header("authorization", CONTROLLER_AUTH)
        .body(full(Bytes::new()))
        .unwrap();
    // The name the caller used for the proxy, e.g. behind a load balancer.
    request
        .headers_mut()
        .insert("host", "pinot.example.com:443".parse().unwrap());
    let answer = read(client.send(request).await).await;
    assert_eq!(answer.status, StatusCode::OK);
    let got = controller.last();
    assert_eq!(
        got.header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(got.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        got.header("x-forwarded-host"),
        Some("pinot.example.com:443")
    );
    assert_eq!(
        got.header("host"),
        Some(controller.addr.to_string().as_str()),
        "the upstream gets its own Host"
    );
    for dropped in [
        "connection",
        "x-client-hop",
        "keep-alive",
        "proxy-authorization",
        "te",
    ] {
        assert_eq!(
            got.header(dropped),
            None,
            "{dropped} reached the controller"
        );
    }
    assert_eq!(got.header("x-end-to-end"), Some("kept"));
    // The caller's credentials stop at the proxy unless pass_through is set.
    assert_eq!(got.header("authorization"), None);
    // The response's hop-by-hop headers stop at the proxy too.
    assert_eq!(answer.headers.get("x-end-to-end").unwrap(), "kept");
    assert!(answer.headers.get("x-upstream-hop").is_none());
    assert!(answer.headers.get("keep-alive").is_none());

    // Over HTTP/2 the original host is the :authority.
    let mut client = Client::open(proxy.addr, Proto::Http2).await;
    assert_eq!(client.get("/tables").await.status, StatusCode::OK);
    let got = controller.last();
    assert_eq!(got.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(
        got.header("x-forwarded-host"),
        Some(proxy.addr.to_string().as_str())
    );
}

#[tokio::test]
async fn a_base_path_in_the_url_is_put_in_front_of_the_request_path() {
    let controller = start_rest("controller").await;
    let proxy = start_proxy_config(&config(&format!(
        "[controller]\nurls = [\"{}/pinot/\"]\n",
        controller.url()
    )))
    .await;
    let mut client = Client::open(proxy.addr, Proto::Http1).await;
    assert_eq!(client.get("/tables?x=1").await.status, StatusCode::OK);
    assert_eq!(controller.last().uri, "/pinot/tables?x=1");
}

#[tokio::test]
async fn a_refused_url_fails_over_and_is_skipped_during_the_back_off() {
    let live = start_rest("live").await;
    let dead = dead_port().await;
    let proxy = start_proxy_config(&config(&format!(
        "[controller]\nurls = [\"http://127.0.0.1:{dead}\", \"{}\"]\n[rest]\nbackoff_ms = 600000\n",
        live.url()
    )))
    .await;
    let mut client = Client::open(proxy.addr, Proto::Http1).await;
    // Round robin makes one of these two try the dead URL first; both succeed.
    for _ in 0..2 {
        let answer = client.get("/tables").await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        assert_eq!(answer.served_by(), "live");
    }
    assert_eq!(live.count(), 2);

    // The dead URL comes back, but it is still backed off: round robin must not pick it.
    let revived = start_rest_on("revived", dead).await;
    for _ in 0..6 {
        assert_eq!(client.get("/tables").await.served_by(), "live");
    }
    assert_eq!(
        revived.state.accepted.get(),
        0,
        "a backed-off URL was tried"
    );
    assert_eq!(live.count(), 8);
}

#[tokio::test]
async fn a_backed_off_url_is_used_again_once_the_back_off_ends() {
    let live = start_rest("live").await;
    let dead = dead_port().await;
    let proxy = start_proxy_config(&config(&format!(
        "[controller]\nurls = [\"http://127.0.0.1:{dead}\", \"{}\"]\n[rest]\nbackoff_ms = 200\n",
        live.url()
    )))
    .await;
    let mut client = Client::open(proxy.addr, Proto::Http1).await;
    for _ in 0..2 {
        assert_eq!(client.get("/tables").await.served_by(), "live");
    }
    let revived = start_rest_on("revived", dead).await;
    // Waiting out the configured back-off, not for readiness.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut served = Vec::new();
    for _ in 0..4 {
        served.push(client.get("/tables").await.served_by().to_string());
    }
    assert_eq!(
        served.iter().filter(|s| *s == "revived").count(),
        2,
        "{served:?}"
    );
    assert_eq!(revived.count(), 2);
}

#[tokio::test]
async fn a_post_fails_over_with_its_body_when_the_first_url_refuses() {
    let broker = start_rest("broker").await;
    let dead = dead_port().await;
    let controller = start_rest("controller").await;
    let proxy = start_proxy_config(&config(&format!(
        "[controller]\nurls = [\"{}\"]\n[broker]\nurls = [\"http://127.0.0.1:{dead}\", \"{}\"]\n",
        controller.url(),
        broker.url()
    )))
    .await;
    let body = br#"{"sql":"SELECT * FROM t LIMIT 10"}"#;
    for proto in [Proto::Http1, Proto::Http2] {
        let mut client = Client::open(proxy.addr, proto).await;
        for _ in 0..2 {
            let answer = client
                .call(
                    Method::POST,
                    "/query/sql",
                    &[("content-type", "application/json")],
                    body,
                )
                .await;
            assert_eq!(
                answer.status,
                StatusCode::OK,
                "{proto:?}: {}",
                answer.text()
            );
            assert_eq!(&broker.last().body[..], body, "{proto:?}");
        }
    }
    assert_eq!(broker.count(), 4);
}

#[tokio::test]
async fn after_a_broken_connection_only_idempotent_requests_are_retried() {
    let (slammer, slammed, _stop) = start_slammer().await;
    let broker = start_rest("broker").await;
    let proxy = start_proxy_config(&config(&format!(
        "[broker]\nurls = [\"http://{slammer}\", \"{}\"]\n",
        broker.url()
    )))
    .await;
    let mut client = Client::open(proxy.addr, Proto::Http1).await;
    // Round robin starts at the first URL and alternates, so the requests at even positions
    // go to the slammer first. A POST may have been read there, so it is not sent again,
    // with a body or without one.
    for body in [&br#"{"sql":"SELECT 1"}"#[..], b""] {
        let answer = client.call(Method::POST, "/query/sql", &[], body).await;
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.text());
        assert_eq!(
            answer.headers.get("content-type").unwrap(),
            "application/json"
        );
        let text = answer.text();
        assert!(text.contains("\"component\":\"broker\""), "{text}");
        assert!(text.contains(&format!("http://{slammer}")), "{text}");
        assert_eq!(broker.count(), 0);
        // Odd position: straight to the live broker.
        let answer = client.get("/debug/timeBoundary/t").await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        assert_eq!(answer.served_by(), "broker");
        assert_eq!(broker.count(), 1);
        broker.state.got.lock().unwrap().clear();
    }
    assert_eq!(slammed.get(), 2);
    // A GET that meets the slammer is retried on the other URL.
    let answer = client.get("/debug/routingTable/t").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(slammed.get(), 3);
    assert_eq!(broker.count(), 1);
}

#[tokio::test]
async fn all_controllers_down_is_503_naming_the_controller() {
    let (first, second) = (dead_port().await, dead_port().await);
    let proxy = start_proxy_config(&config(&format!(
        "[controller]\nurls = [\"http://127.0.0.1:{first}\", \"http://127.0.0.1:{second}\"]\n"
    )))
    .await;
    for proto in [Proto::Http1, Proto::Http2] {
        let mut client = Client::open(proxy.addr, proto).await;
        // The second time both are backed off and still tried as a last resort.
        for _ in 0..2 {
            let answer = client.get("/tables").await;
            assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(
                answer.headers.get("content-type").unwrap(),
                "application/json"
            );
            let text = answer.text();
            assert!(
                text.starts_with("{\"error\":\"pinot-proxy: no controller reachable: "),
                "{text}"
            );
            assert!(text.contains("\"component\":\"controller\"}"), "{text}");
            assert!(
                text.contains(&format!("http://127.0.0.1:{first}")),
                "{text}"
            );
            assert!(
                text.contains(&format!("http://127.0.0.1:{second}")),
                "{text}"
            );
        }
    }
}

#[tokio::test]
async fn a_missing_broker_section_is_502_naming_it() {
    let controller = start_rest("controller").await;
    let proxy = proxy_for_controller(&controller).await;
    let mut client = Client::open(proxy.addr, Proto::Http1).await;
    let answer = client
        .call(Method::POST, "/query/sql", &[], br#"{"sql":"SELECT 1"}"#)
        .await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    let text = answer.text();
    assert!(
        text.contains("POST /query/sql goes to the broker but no [broker] section is configured"),
        "{text}"
    );
    assert!(text.contains("\"component\":\"broker\""), "{text}");
    // The controller side keeps working.
    assert_eq!(client.get("/tables").await.status, StatusCode::OK);
    assert_eq!(controller.count(), 1);
}

#[tokio::test]
async fn a_10_mib_response_arrives_byte_for_byte() {
    let controller = start_rest("controller").await;
    let proxy = proxy_for_controller(&controller).await;
    let expected: Vec<u8> = (0..BIG_CHUNKS)
        .flat_map(|i| big_chunk(i).to_vec())
        .collect();
    assert_eq!(expected.len(), 10 * 1024 * 1024);
    for proto in [Proto::Http1, Proto::Http2] {
        let mut client = Client::open(proxy.addr, proto).await;
        let answer = client.get("/big").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body.len(), expected.len(), "{proto:?}");
        assert!(answer.body[..] == expected[..], "{proto:?}: bytes differ");
    }
}

#[tokio::test]
async fn bodies_stream_through_without_being_buffered() {
    let controller = start_rest("controller").await;
    let proxy = proxy_for_controller(&controller).await;
    for proto in [Proto::Http1, Proto::Http2] {
        let mut client = Client::open(proxy.addr, proto).await;

        // Response: the first chunk reaches the caller while the upstream holds the rest back.
        let request = client
            .request(Method::GET, "/gated")
            .body(full(Bytes::new()))
            .unwrap();
        let mut body = client.send(request).await.into_body();
        let first = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("the first chunk arrives before the body is complete")
            .unwrap()
            .unwrap();
        assert_eq!(first.into_data().unwrap(), "first-");
        controller.state.gate.notify_one();
        let rest = tokio::time::timeout(WAIT, body.collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        assert_eq!(rest, "rest");

        // Request: the upstream gets the first chunk while the caller has not sent the rest.
        let (chunks, receiver) = mpsc::channel::<Bytes>(1);
        let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
            let chunk = receiver.recv().await?;
            Some((Ok(Frame::data(chunk)), receiver))
        });
        let request = client
            .request(Method::POST, "/upload")
            .body(stream_body(stream))
            .unwrap();
        let first = Bytes::from(block(3, 0, 1000));
        let second = Bytes::from(block(3, 1, 2 * 1024 * 1024));
        chunks.send(first.clone()).await.unwrap();
        let upstream_saw_first = controller.state.first_chunk.clone();
        let responded = tokio::spawn(async move {
            let mut client = client;
            read(client.send(request).await).await
        });
        tokio::time::timeout(WAIT, upstream_saw_first.notified())
            .await
            .expect("the upstream gets the first chunk before the body is complete");
        chunks.send(second.clone()).await.unwrap();
        drop(chunks);
        let answer = responded.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        let size = first.len() + second.len();
        assert_eq!(answer.text(), format!("{{\"bytes\":{size}}}"));
        let got = controller.last();
        assert_eq!(&got.body[..first.len()], &first[..], "{proto:?}");
        assert_eq!(&got.body[first.len()..], &second[..], "{proto:?}");
    }
}

#[tokio::test]
async fn no_response_head_within_the_request_timeout_is_504() {
    let controller = start_rest("controller").await;
    let proxy = start_proxy_config(&config(&format!(
        "[controller]\nurls = [\"{}\"]\n[rest]\nrequest_timeout_ms = 300\n",
        controller.url()
    )))
    .await;
    for proto in [Proto::Http1, Proto::Http2] {
        let mut client = Client::open(proxy.addr, proto).await;
        let started = Instant::now();
        let answer = client.get("/hang").await;
        assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT, "{proto:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let text = answer.text();
        assert!(text.contains("no response within 300 ms"), "{text}");
        assert!(text.contains(&controller.url()), "{text}");
        assert!(text.contains("\"component\":\"controller\""), "{text}");
        // The timeout is per request: the connection goes on serving.
        assert_eq!(client.get("/tables").await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_response_body_still_streaming_at_the_request_timeout_is_cut() {
    let controller = start_rest("controller").await;
    let proxy = start_proxy_config(&config(&format!(
        "[controller]\nurls = [\"{}\"]\n[rest]\nrequest_timeout_ms = 300\n",
        controller.url()
    )))
    .await;
    for proto in [Proto::Http1, Proto::Http2] {
        let mut client = Client::open(proxy.addr, proto).await;
        let request = client
            .request(Method::GET, "/stall-body")
            .body(full(Bytes::new()))
            .unwrap();
        let response = client.send(request).await;
        assert_eq!(response.status(), StatusCode::OK);
        let ended = tokio::time::timeout(WAIT, response.into_body().collect())
            .await
            .expect("the body is cut instead of hanging");
        assert!(
            ended.is_err(),
            "{proto:?}: a cut body must not look complete"
        );
    }
}

/// Sends a raw gRPC Submit on an HTTP/2 connection and returns (grpc-status, message count).
async fn grpc_submit(
    mut sender: hyper::client::conn::http2::SendRequest<Body>,
    addr: SocketAddr,
    sql: &str,
    server_port: u16,
) -> (String, usize) {
    let message = trino_request(sql, server_port).encode_to_vec();
    let request = Request::post(format!("http://{addr}{SUBMIT}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(full(frame(&message)))
        .unwrap();
    let response = tokio::time::timeout(WAIT, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    let collected = tokio::time::timeout(WAIT, response.into_body().collect())
        .await
        .unwrap()
        .unwrap();
    let status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = collected.to_bytes();
    let (mut at, mut count) = (0, 0);
    while at + 5 <= body.len() {
        let length = u32::from_be_bytes(body[at + 1..at + 5].try_into().unwrap()) as usize;
        at += 5 + length;
        count += 1;
    }
    (status, count)
}

#[tokio::test]
async fn grpc_and_rest_share_one_http2_connection() {
    let server = start_fake("server-0").await;
    let controller = start_rest("controller").await;
    let proxy = proxy_for_controller(&controller).await;
    let client = Client::open(proxy.addr, Proto::Http2).await;
    let sender = client.h2.clone().unwrap();
    let rest = |path: &'static str| {
        let mut client = Client {
            addr: proxy.addr,
            proto: Proto::Http2,
            h1: None,
            h2: Some(sender.clone()),
        };
        async move { client.get(path).await }
    };
    // Interleaved: a slow gRPC stream is in flight while REST calls come and go.
    let (slow, tables, blocks, schema) = tokio::join!(
        grpc_submit(sender.clone(), proxy.addr, "slow:3:30", server.port()),
        rest("/tables"),
        grpc_submit(sender.clone(), proxy.addr, "blocks:2:100:1", server.port()),
        rest("/tables/airlineStats/schema"),
    );
    assert_eq!(slow, ("0".to_string(), 4));
    assert_eq!(blocks, ("0".to_string(), 3));
    for answer in [tables, schema] {
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.served_by(), "controller");
    }
    // And one after the other on the same connection.
    assert_eq!(rest("/tables").await.status, StatusCode::OK);
    let again = grpc_submit(sender.clone(), proxy.addr, "blocks:1:10:2", server.port()).await;
    assert_eq!(again, ("0".to_string(), 2));
    assert_eq!(server.seen.request_count(), 3);
    assert_eq!(controller.count(), 3);
}

#[tokio::test]
async fn each_rest_request_logs_one_info_line() {
    // Other tests' lines land here too, so this test's requests use paths no other test uses.
    let captured = capture_logs();
    let controller = start_rest("controller").await;
    let dead = dead_port().await;
    let proxy = start_proxy_config(&config(&format!(
        "[controller]\nurls = [\"{}\"]\n[broker]\nurls = [\"http://127.0.0.1:{dead}\"]\n",
        controller.url()
    )))
    .await;
    let mut client = Client::open(proxy.addr, Proto::Http1).await;
    assert_eq!(
        client.get("/tables/log-test?secret=1").await.status,
        StatusCode::OK
    );
    assert_eq!(
        client.get("/query/log-test").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    drop(client);
    proxy.shutdown().await.unwrap();
    let lines = captured.lines();
    let requests: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains("rest request") && line.contains("log-test"))
        .collect();
    assert_eq!(requests.len(), 2, "{lines:#?}");
    let ok = requests[0];
    assert!(ok.contains(" INFO "), "{ok}");
    for field in [
        "method=GET",
        "path=/tables/log-test",
        "component=controller",
        &format!("upstream={}", controller.url()),
        "status=200",
        "duration_ms=",
    ] {
        assert!(ok.contains(field), "{field} missing from {ok}");
    }
    assert!(
        !ok.contains("secret"),
        "the query string is not logged: {ok}"
    );
    let failed = requests[1];
    assert!(failed.contains(" WARN "), "{failed}");
    for field in [
        "component=broker",
        "status=503",
        "side=upstream",
        "no broker reachable",
    ] {
        assert!(failed.contains(field), "{field} missing from {failed}");
    }
}

#[tokio::test]
async fn configured_credentials_replace_the_callers_per_component() {
    let controller = start_rest("controller").await;
    let broker = start_rest("broker").await;
    let proxy = start_proxy_config(&config(&format!(
        "[controller]\nurls = [\"{}\"]\n[controller.auth]\nusername = \"ctl\"\n\
         password_env = \"PINOT_PROXY_TEST_CONTROLLER_PASSWORD\"\n\
         [broker]\nurls = [\"{}\"]\n[broker.auth]\nusername = \"brk\"\n\
         password_env = \"PINOT_PROXY_TEST_BROKER_PASSWORD\"\n\
         [auth]\nrest = \"required\"\n[[auth.users]]\nusername = \"caller\"\n\
         password_sha256 = \"2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\"\n",
        controller.url(),
        broker.url()
    )))
    .await;
    let mut client = Client::open(proxy.addr, Proto::Http1).await;
    let caller = [("authorization", "Basic Y2FsbGVyOnNlY3JldA==")];
    assert_eq!(
        client
            .call(Method::GET, "/tables", &caller, b"")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        client
            .call(Method::POST, "/query/sql", &caller, b"{}")
            .await
            .status,
        StatusCode::OK
    );
    // base64("ctl:c-pass") and base64("brk:b-pass").
    assert_eq!(
        controller.last().header("authorization"),
        Some("Basic Y3RsOmMtcGFzcw==")
    );
    assert_eq!(
        broker.last().header("authorization"),
        Some("Basic YnJrOmItcGFzcw==")
    );
}

#[tokio::test]
async fn a_controller_url_pointing_at_the_proxy_is_a_loop_not_a_recursion() {
    let port = dead_port().await;
    let proxy = start_proxy_config(&format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[servers]\n\
         [controller]\nurls = [\"http://127.0.0.1:{port}\"]\n"
    ))
    .await;
    let mut client = Client::open(proxy.addr, Proto::Http1).await;
    let answer = client.get("/tables").await;
    assert_eq!(
        answer.status,
        StatusCode::LOOP_DETECTED,
        "{}",
        answer.text()
    );
    assert!(
        answer.text().contains("points at the proxy itself"),
        "{}",
        answer.text()
    );
}

// Regression: one HTTP/2 connection opening hundreds of slow requests made the proxy hold as
// many controller connections; requests beyond the limits are now answered 503 at once.
#[tokio::test]
async fn rest_requests_are_bounded_per_connection_and_per_component() {
    let controller = start_rest("controller").await;
    let proxy = start_proxy_config(&config(&format!(
        "[controller]\nurls = [\"{}\"]\n[rest]\nmax_requests_per_connection = 2\n\
         max_requests_per_component = 3\n",
        controller.url()
    )))
    .await;
    let mut many = Client::open(proxy.addr, Proto::Http2).await;
    let mut hanging = Vec::new();
    for _ in 0..2 {
        let request = many
            .request(Method::GET, "/hang/bounded")
            .body(full(Vec::new()))
            .unwrap();
        let sent = many.h2.as_mut().unwrap().send_request(request);
        hanging.push(tokio::spawn(sent));
    }
    wait_until(|| controller.count() == 2).await;
    let third = many.call(Method::GET, "/tables", &[], b"").await;
    assert_eq!(
        third.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        third.text()
    );
    assert!(
        third.text().contains("max_requests_per_connection = 2"),
        "{}",
        third.text()
    );

    // Another connection may still send, until the controller's limit is reached.
    let mut other = Client::open(proxy.addr, Proto::Http2).await;
    let request = other
        .request(Method::GET, "/hang/bounded")
        .body(full(Vec::new()))
        .unwrap();
    hanging.push(tokio::spawn(
        other.h2.as_mut().unwrap().send_request(request),
    ));
    wait_until(|| controller.count() == 3).await;
    let mut last = Client::open(proxy.addr, Proto::Http1).await;
    let refused = last.call(Method::GET, "/tables", &[], b"").await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.text()
    );
    assert!(
        refused.text().contains("max_requests_per_component = 3"),
        "{}",
        refused.text()
    );
    assert_eq!(controller.count(), 3, "nothing more reached the controller");

    // Once requests end, their slots are free again.
    for request in hanging {
        request.abort();
    }
    drop((many, other));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let answer = last.call(Method::GET, "/tables", &[], b"").await;
        if answer.status == StatusCode::OK {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slots never freed: {}",
            answer.text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `condition` (every 10 ms, for at most [`WAIT`]) until it holds.
async fn wait_until(condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

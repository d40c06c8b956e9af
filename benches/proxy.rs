//! Throughput, latency, CPU and memory of pinot-proxy against direct calls and nginx
//! (`grpc_pass grpc://$http_forward_host:$http_forward_port`), in one run on this machine.
//!
//! Run with `bench/run.sh` (installs nginx, builds the release proxy, then runs this with
//! `cargo bench --bench proxy`). Settings come from `BENCH_*` environment variables; see
//! `Settings::from_env` and the README.

#[path = "proxy/fake.rs"]
mod fake;
#[path = "proxy/load.rs"]
mod load;
#[path = "proxy/procs.rs"]
mod procs;
#[path = "proxy/report.rs"]
mod report;

#[allow(dead_code, clippy::all, clippy::pedantic)]
mod pinot {
    include!(concat!(
        env!("OUT_DIR"),
        "/test/org.apache.pinot.common.proto.rs"
    ));
}

use anyhow::Context as _;
use fake::{FakeServer, Payloads};
use load::{Client, Route};
use report::{cell, median, quantile, ratio, Json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;
const LARGE: usize = 1 << 20;
const SMALL: usize = 100;

/// What to run, from `BENCH_*` environment variables.
struct Settings {
    quick: bool,
    runs: usize,
    run_secs: f64,
    warmup_secs: f64,
    workloads: Vec<char>,
    routes: Vec<Route>,
    slow_mib: u64,
    slow_rate_mib: f64,
    paced_rate: f64,
    logs: bool,
    json: PathBuf,
    proxy_bin: PathBuf,
    nginx_bin: Option<PathBuf>,
    nginx_workers: usize,
    nginx_grpc_buffer: Option<String>,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let num = |name: &str, default: f64| -> anyhow::Result<f64> {
            match var(name) {
                Some(v) => v
                    .parse()
                    .with_context(|| format!("{name}={v}: not a number")),
                None => Ok(default),
            }
        };
        let quick = var("BENCH_QUICK").is_some_and(|v| v != "0");
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target_dir = var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest.join("target"));
        let workloads: Vec<char> = var("BENCH_WORKLOADS")
            .unwrap_or_else(|| "abcd".into())
            .chars()
            .filter(|c| "abcd".contains(*c))
            .collect();
        let routes = match var("BENCH_TARGETS") {
            None => Route::ALL.to_vec(),
            Some(list) => {
                let names: Vec<&str> = list.split(',').map(str::trim).collect();
                for name in &names {
                    if !Route::ALL.iter().any(|r| r.name() == *name) {
                        anyhow::bail!(
                            "BENCH_TARGETS: unknown target {name:?} (direct, proxy-header, proxy-body, nginx)"
                        );
                    }
                }
                Route::ALL
                    .into_iter()
                    .filter(|r| names.contains(&r.name()))
                    .collect()
            }
        };
        let nginx_bin = match var("BENCH_NGINX") {
            Some(path) => Some(PathBuf::from(path)),
            None => find_in_path("nginx").or_else(|| {
                let sbin = PathBuf::from("/usr/sbin/nginx");
                sbin.exists().then_some(sbin)
            }),
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Settings {
            quick,
            runs: num("BENCH_RUNS", if quick { 3.0 } else { 5.0 })?.max(1.0) as usize,
            run_secs: num("BENCH_SECS", if quick { 1.0 } else { 3.0 })?,
            warmup_secs: num("BENCH_WARMUP_SECS", if quick { 0.5 } else { 1.0 })?,
            workloads,
            routes,
            slow_mib: num("BENCH_SLOW_MIB", if quick { 160.0 } else { 2048.0 })?.max(1.0) as u64,
            slow_rate_mib: num("BENCH_SLOW_RATE_MIB", 20.0)?,
            paced_rate: num("BENCH_PACED_RATE", 2000.0)?.max(1.0),
            logs: var("BENCH_LOGS").is_none_or(|v| v != "0"),
            json: var("BENCH_JSON")
                .map(PathBuf::from)
                .unwrap_or_else(|| target_dir.join("bench/proxy.json")),
            proxy_bin: var("BENCH_PROXY_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| target_dir.join("release/pinot-proxy")),
            nginx_bin,
            nginx_workers: num("BENCH_NGINX_WORKERS", cores as f64)?.max(1.0) as usize,
            nginx_grpc_buffer: var("BENCH_NGINX_GRPC_BUFFER"),
        })
    }

    fn has(&self, route: Route) -> bool {
        self.routes.contains(&route)
    }

    fn to_json(&self) -> Json {
        Json::obj([
            ("quick", Json::Bool(self.quick)),
            ("runs", Json::Num(self.runs as f64)),
            ("run_secs", Json::Num(self.run_secs)),
            ("warmup_secs", Json::Num(self.warmup_secs)),
            ("slow_mib", Json::Num(self.slow_mib as f64)),
            ("slow_rate_mib_per_s", Json::Num(self.slow_rate_mib)),
            ("paced_calls_per_s", Json::Num(self.paced_rate)),
            ("per_call_logs", Json::Bool(self.logs)),
            ("nginx_workers", Json::Num(self.nginx_workers as f64)),
            (
                "nginx_grpc_buffer_size",
                self.nginx_grpc_buffer
                    .as_ref()
                    .map_or(Json::str("default"), Json::str),
            ),
        ])
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// One workload of the issue: the response each call streams, calls in flight, servers.
struct Workload {
    key: char,
    title: &'static str,
    messages: u64,
    size: usize,
    concurrency: usize,
    servers: usize,
}

const WORKLOADS: [Workload; 3] = [
    Workload {
        key: 'a',
        title: "large streams: 16 x 1 MiB messages per Submit, 4 calls in flight, 1 server",
        messages: 16,
        size: LARGE,
        concurrency: 4,
        servers: 1,
    },
    Workload {
        key: 'b',
        title: "small calls: 1 x 100 B message per Submit, 64 calls in flight, 1 server",
        messages: 1,
        size: SMALL,
        concurrency: 64,
        servers: 1,
    },
    Workload {
        key: 'c',
        title: "many targets: 1 x 100 B message per Submit, 64 calls in flight over 50 servers",
        messages: 1,
        size: SMALL,
        concurrency: 64,
        servers: 50,
    },
];

/// The proxies under test, started once for the whole bench.
struct Fronts {
    proxy: Option<procs::Child>,
    nginx: Option<procs::Child>,
}

impl Fronts {
    fn addr(&self, route: Route) -> Option<SocketAddr> {
        match route {
            Route::Direct => None,
            Route::ProxyHeader | Route::ProxyBody => self.proxy.as_ref().map(|c| c.addr),
            Route::Nginx => self.nginx.as_ref().map(|c| c.addr),
        }
    }

    /// The processes whose CPU and memory count for a route (none when direct).
    fn pids(&self, route: Route) -> Vec<u32> {
        match route {
            Route::Direct => Vec::new(),
            Route::ProxyHeader | Route::ProxyBody => {
                self.proxy.iter().map(procs::Child::pid).collect()
            }
            Route::Nginx => self.nginx.as_ref().map(|c| c.pids()).unwrap_or_default(),
        }
    }

    fn available(&self, route: Route) -> bool {
        route == Route::Direct || self.addr(route).is_some()
    }
}

/// What one fixed-duration run measured for one route.
struct Sample {
    calls: u64,
    errors: u64,
    /// Paced calls that started late because every slot was busy.
    late: u64,
    first_error: Option<String>,
    calls_per_s: f64,
    mib_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    cpu_s: Option<f64>,
    bench_cpu_pct: f64,
    wall_s: f64,
    bytes: u64,
    peak_rss_mib: Option<f64>,
    /// Connections each server accepted during the run.
    accepted: Vec<u64>,
}

/// A route's figures in one workload: medians over the runs.
struct Figures {
    route: Route,
    runs: usize,
    calls: u64,
    errors: u64,
    late: u64,
    first_error: Option<String>,
    calls_per_s: Option<f64>,
    mib_per_s: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    cpu_s_per_gib: Option<f64>,
    cpu_s_per_10k_calls: Option<f64>,
    cpu_pct: Option<f64>,
    bench_cpu_pct: Option<f64>,
    /// Largest peak RSS of the route's processes over the runs (VmHWM, summed for nginx).
    peak_rss_mib: Option<f64>,
    /// New connections the busiest server accepted during all measured runs.
    new_conns_max_per_server: u64,
    new_conns_total: u64,
    /// Share of measured calls that did not open a server connection.
    reuse_pct: f64,
    /// Each run's calls/s, MiB/s and p99, in run order (to see the spread behind a median).
    per_run: Vec<[f64; 3]>,
}

impl Figures {
    fn from_samples(route: Route, samples: &[Sample]) -> Figures {
        let med =
            |f: &dyn Fn(&Sample) -> Option<f64>| median(samples.iter().filter_map(f).collect());
        let calls: u64 = samples.iter().map(|s| s.calls).sum();
        let servers = samples.first().map_or(0, |s| s.accepted.len());
        let per_server: Vec<u64> = (0..servers)
            .map(|i| samples.iter().map(|s| s.accepted[i]).sum())
            .collect();
        let new_conns_total: u64 = per_server.iter().sum();
        Figures {
            route,
            runs: samples.len(),
            calls,
            errors: samples.iter().map(|s| s.errors).sum(),
            late: samples.iter().map(|s| s.late).sum(),
            first_error: samples.iter().find_map(|s| s.first_error.clone()),
            calls_per_s: med(&|s| Some(s.calls_per_s)),
            mib_per_s: med(&|s| Some(s.mib_per_s)),
            p50_ms: med(&|s| Some(s.p50_ms)),
            p99_ms: med(&|s| Some(s.p99_ms)),
            max_ms: med(&|s| Some(s.max_ms)),
            cpu_s_per_gib: med(&|s| Some(s.cpu_s? / (s.bytes as f64 / GIB))),
            cpu_s_per_10k_calls: med(&|s| Some(s.cpu_s? / (s.calls as f64 / 10_000.0))),
            cpu_pct: med(&|s| Some(100.0 * s.cpu_s? / s.wall_s)),
            bench_cpu_pct: med(&|s| Some(s.bench_cpu_pct)),
            peak_rss_mib: samples
                .iter()
                .filter_map(|s| s.peak_rss_mib)
                .reduce(f64::max),
            new_conns_max_per_server: per_server.iter().copied().max().unwrap_or(0),
            new_conns_total,
            reuse_pct: if calls == 0 {
                f64::NAN
            } else {
                100.0 * (1.0 - new_conns_total as f64 / calls as f64).max(0.0)
            },
            per_run: samples
                .iter()
                .map(|s| [s.calls_per_s, s.mib_per_s, s.p99_ms])
                .collect(),
        }
    }

    fn to_json(&self) -> Json {
        Json::obj([
            ("target", Json::str(self.route.name())),
            ("runs", Json::Num(self.runs as f64)),
            ("calls", Json::Num(self.calls as f64)),
            ("errors", Json::Num(self.errors as f64)),
            ("late_starts", Json::Num(self.late as f64)),
            (
                "first_error",
                self.first_error.clone().map_or(Json::Null, Json::Str),
            ),
            ("calls_per_s", Json::opt(self.calls_per_s)),
            ("mib_per_s", Json::opt(self.mib_per_s)),
            ("p50_ms", Json::opt(self.p50_ms)),
            ("p99_ms", Json::opt(self.p99_ms)),
            ("max_ms", Json::opt(self.max_ms)),
            ("cpu_s_per_gib", Json::opt(self.cpu_s_per_gib)),
            ("cpu_s_per_10k_calls", Json::opt(self.cpu_s_per_10k_calls)),
            ("cpu_pct", Json::opt(self.cpu_pct)),
            ("bench_process_cpu_pct", Json::opt(self.bench_cpu_pct)),
            ("peak_rss_mib", Json::opt(self.peak_rss_mib)),
            (
                "new_server_conns_max_per_server",
                Json::Num(self.new_conns_max_per_server as f64),
            ),
            (
                "new_server_conns_total",
                Json::Num(self.new_conns_total as f64),
            ),
            ("conn_reuse_pct", Json::opt(Some(self.reuse_pct))),
            (
                "per_run",
                Json::Arr(
                    self.per_run
                        .iter()
                        .map(|[calls, mib, p99]| {
                            Json::obj([
                                ("calls_per_s", Json::Num(*calls)),
                                ("mib_per_s", Json::Num(*mib)),
                                ("p99_ms", Json::Num(*p99)),
                            ])
                        })
                        .collect(),
                ),
            ),
        ])
    }
}

/// The (d) slow-consumer stream through one route.
struct SlowFigures {
    route: Route,
    bytes: u64,
    secs: f64,
    error: Option<String>,
    rss_samples: usize,
    rss_max_mib: Option<f64>,
    rss_median_mib: Option<f64>,
    peak_rss_mib: Option<f64>,
    cpu_s_per_gib: Option<f64>,
}

impl SlowFigures {
    fn to_json(&self) -> Json {
        Json::obj([
            ("target", Json::str(self.route.name())),
            ("bytes", Json::Num(self.bytes as f64)),
            ("secs", Json::Num(self.secs)),
            ("mib_per_s", Json::Num(self.bytes as f64 / MIB / self.secs)),
            ("error", self.error.clone().map_or(Json::Null, Json::Str)),
            ("rss_samples", Json::Num(self.rss_samples as f64)),
            ("rss_max_mib", Json::opt(self.rss_max_mib)),
            ("rss_median_mib", Json::opt(self.rss_median_mib)),
            ("peak_rss_mib", Json::opt(self.peak_rss_mib)),
            ("cpu_s_per_gib", Json::opt(self.cpu_s_per_gib)),
        ])
    }
}

/// One target of the issue, evaluated.
struct Check {
    id: &'static str,
    text: String,
    /// None when it could not be evaluated (a route or workload was not run).
    pass: Option<bool>,
    detail: String,
}

fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("bench: {err:#}");
            return ExitCode::from(2);
        }
    };
    // Client and fake servers share one runtime with a worker per core, like the proxy's.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("pinot-proxy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&settings, &dir).await;
    match &result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Err(_) => eprintln!("bench: logs kept in {}", dir.display()),
    }
    result
}

async fn run_in(settings: &Settings, dir: &Path) -> anyhow::Result<()> {
    let ticks = procs::clock_ticks();
    let needs_proxy = settings.has(Route::ProxyHeader) || settings.has(Route::ProxyBody);
    if needs_proxy && !settings.proxy_bin.exists() {
        anyhow::bail!(
            "{} not found: run bench/run.sh, or `cargo build --release --locked` first \
             (or set BENCH_PROXY_BIN)",
            settings.proxy_bin.display()
        );
    }
    if needs_proxy {
        warn_if_stale(&settings.proxy_bin);
    }
    let machine = machine_json(settings);
    println!("pinot-proxy bench: {}", machine_line(&machine));
    let proxy = if needs_proxy {
        let proxy_dir = dir.join("proxy");
        std::fs::create_dir_all(&proxy_dir)?;
        Some(procs::start_proxy(
            &settings.proxy_bin,
            &proxy_dir,
            settings.logs,
        )?)
    } else {
        None
    };
    let nginx = match (&settings.nginx_bin, settings.has(Route::Nginx)) {
        (Some(bin), true) => {
            let nginx_dir = dir.join("nginx");
            std::fs::create_dir_all(&nginx_dir)?;
            let options = procs::NginxOptions {
                workers: settings.nginx_workers,
                access_log: settings.logs,
                grpc_buffer_size: settings.nginx_grpc_buffer.clone(),
            };
            Some(procs::start_nginx(bin, &nginx_dir, &options)?)
        }
        (None, true) => {
            eprintln!("bench: nginx not found (bench/run.sh installs it; or set BENCH_NGINX): skipping it");
            None
        }
        _ => None,
    };
    let fronts = Fronts { proxy, nginx };
    let routes: Vec<Route> = settings
        .routes
        .iter()
        .copied()
        .filter(|&r| fronts.available(r))
        .collect();
    print_plan(settings, &routes);

    let payloads = Arc::new(Payloads::new(&[LARGE, SMALL]));
    let mut results: Vec<(&Workload, WorkloadResult)> = Vec::new();
    for workload in WORKLOADS
        .iter()
        .filter(|w| settings.workloads.contains(&w.key))
    {
        let result = run_workload(settings, &fronts, &routes, workload, &payloads, ticks).await?;
        print_table(settings, workload, &result);
        results.push((workload, result));
    }
    let mut slow = Vec::new();
    if settings.workloads.contains(&'d') {
        let slow_routes: Vec<Route> = routes
            .iter()
            .copied()
            .filter(|&r| matches!(r, Route::ProxyBody | Route::Nginx))
            .collect();
        for route in slow_routes {
            eprintln!(
                "(d) {}: streaming {} MiB at {} MiB/s ...",
                route.name(),
                settings.slow_mib,
                settings.slow_rate_mib
            );
            slow.push(run_slow(settings, &fronts, route, &payloads, ticks).await?);
        }
        print_slow(settings, &slow);
    }

    let checks = evaluate(&results, &slow);
    print_checks(&checks);
    let json = Json::obj([
        ("machine", machine),
        ("settings", settings.to_json()),
        (
            "workloads",
            Json::Arr(
                results
                    .iter()
                    .map(|(w, result)| workload_json(w, result))
                    .collect(),
            ),
        ),
        (
            "slow_consumer",
            Json::obj([
                ("title", Json::str(slow_title(settings))),
                (
                    "targets",
                    Json::Arr(slow.iter().map(SlowFigures::to_json).collect()),
                ),
            ]),
        ),
        (
            "checks",
            Json::Arr(
                checks
                    .iter()
                    .map(|c| {
                        Json::obj([
                            ("id", Json::str(c.id)),
                            ("target", Json::str(c.text.clone())),
                            ("pass", c.pass.map_or(Json::Null, Json::Bool)),
                            ("detail", Json::str(c.detail.clone())),
                        ])
                    })
                    .collect(),
            ),
        ),
    ]);
    if let Some(parent) = settings.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&settings.json, format!("{json}\n"))
        .with_context(|| format!("cannot write {}", settings.json.display()))?;
    println!("\nJSON: {}", settings.json.display());
    Ok(())
}

fn print_plan(settings: &Settings, routes: &[Route]) {
    let names: Vec<&str> = routes.iter().map(|r| r.name()).collect();
    let standard = WORKLOADS
        .iter()
        .filter(|w| settings.workloads.contains(&w.key))
        .count() as f64;
    let per_workload =
        routes.len() as f64 * (settings.warmup_secs + settings.runs as f64 * settings.run_secs);
    let paced = if settings.workloads.contains(&'b') {
        routes.len() as f64 * settings.runs as f64 * settings.run_secs
    } else {
        0.0
    };
    let slow_routes = routes
        .iter()
        .filter(|r| matches!(r, Route::ProxyBody | Route::Nginx))
        .count() as f64;
    let slow = if settings.workloads.contains(&'d') {
        slow_routes * settings.slow_mib as f64 / settings.slow_rate_mib
    } else {
        0.0
    };
    println!(
        "targets: {}; {} runs x {} s each after {} s warm-up; per-call logs {}; about {:.0} s\n",
        names.join(", "),
        settings.runs,
        settings.run_secs,
        settings.warmup_secs,
        if settings.logs {
            "on (proxy RUST_LOG default, nginx access_log)"
        } else {
            "off"
        },
        standard * per_workload + paced + slow,
    );
    println!(
        "columns: latency from sending a call to its trailers; CPU s/GiB, CPU s/10k calls and \
         CPU % (of one core) are the proxy's process (nginx: master + workers); load % is the \
         bench process (client and fake servers); RSS MiB is the proxy's peak (VmHWM) in a \
         run; new conns: connections the fake servers accepted during measured runs\n"
    );
}

/// How calls are offered.
#[derive(Clone, Copy)]
enum Load {
    /// A fixed number of calls in flight, each started when one ends: finds the most calls/s.
    Closed(usize),
    /// Calls started at a fixed rate, at most `max_in_flight` at once: latency below saturation.
    Paced { rate: f64, max_in_flight: usize },
}

/// A workload's figures per route.
struct WorkloadResult {
    figures: Vec<Figures>,
    /// (b) only: the same calls at a fixed rate, for latency below saturation.
    paced: Vec<Figures>,
    /// (c) only: connections open at each server after the runs, all clients closed.
    open_after: Option<Vec<u64>>,
}

/// Warms up every route, then runs them interleaved (run 1 of each, run 2 of each, ...), so
/// that drift over time hits them alike.
async fn run_workload(
    settings: &Settings,
    fronts: &Fronts,
    routes: &[Route],
    workload: &Workload,
    payloads: &Arc<Payloads>,
    ticks: f64,
) -> anyhow::Result<WorkloadResult> {
    let servers = fake::start(workload.servers, payloads).await?;
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let response = (workload.messages, workload.size);
    let expected = payloads.response_len(workload.messages, workload.size);
    let mut clients = Vec::new();
    for &route in routes {
        let client = Client::new(route, fronts.addr(route), &addrs, response, expected)
            .await
            .with_context(|| format!("({}) {}: connecting", workload.key, route.name()))?;
        clients.push(Arc::new(client));
    }
    let warmup = Duration::from_secs_f64(settings.warmup_secs);
    for (route, client) in routes.iter().zip(&clients) {
        let result = load::run_for(client, workload.concurrency, warmup).await;
        if result.calls == 0 {
            anyhow::bail!(
                "({}) {}: no call succeeded in the warm-up: {}",
                workload.key,
                route.name(),
                result.first_error.unwrap_or_default()
            );
        }
    }
    let phase = |load| {
        run_phase(
            settings,
            fronts,
            routes,
            &clients,
            workload.key,
            &servers,
            load,
            ticks,
        )
    };
    let figures = phase(Load::Closed(workload.concurrency)).await;
    let paced = if workload.key == 'b' {
        phase(Load::Paced {
            rate: settings.paced_rate,
            max_in_flight: workload.concurrency,
        })
        .await
    } else {
        Vec::new()
    };
    // With every client gone, what stays open at the servers is what the proxies hold.
    let open_after = if workload.servers > 1 {
        drop(clients);
        tokio::time::sleep(Duration::from_millis(500)).await;
        Some(servers.iter().map(|s| s.stats.open()).collect())
    } else {
        None
    };
    Ok(WorkloadResult {
        figures,
        paced,
        open_after,
    })
}

#[allow(clippy::too_many_arguments)]
async fn run_phase(
    settings: &Settings,
    fronts: &Fronts,
    routes: &[Route],
    clients: &[Arc<Client>],
    key: char,
    servers: &[FakeServer],
    load: Load,
    ticks: f64,
) -> Vec<Figures> {
    let mut samples: Vec<Vec<Sample>> = routes.iter().map(|_| Vec::new()).collect();
    let duration = Duration::from_secs_f64(settings.run_secs);
    let label = match load {
        Load::Closed(_) => String::new(),
        Load::Paced { rate, .. } => format!(" at {rate} calls/s"),
    };
    for run in 0..settings.runs {
        for (i, (&route, client)) in routes.iter().zip(clients).enumerate() {
            let pids = fronts.pids(route);
            let sample = measure(client, load, &pids, servers, duration, ticks).await;
            eprintln!(
                "({key}){label} run {}/{} {:<12} {:>9.1} calls/s {:>8.1} MiB/s  p99 {:>7.2} ms{}",
                run + 1,
                settings.runs,
                route.name(),
                sample.calls_per_s,
                sample.mib_per_s,
                sample.p99_ms,
                if sample.errors > 0 {
                    format!("  {} errors", sample.errors)
                } else {
                    String::new()
                }
            );
            samples[i].push(sample);
        }
    }
    routes
        .iter()
        .zip(&samples)
        .map(|(&route, samples)| Figures::from_samples(route, samples))
        .collect()
}

async fn measure(
    client: &Arc<Client>,
    load: Load,
    pids: &[u32],
    servers: &[FakeServer],
    duration: Duration,
    ticks: f64,
) -> Sample {
    let me = [std::process::id()];
    let rss_reset = !pids.is_empty() && procs::reset_peak_rss(pids);
    let accepted_before: Vec<u64> = servers.iter().map(|s| s.stats.accepted()).collect();
    let cpu_before = procs::cpu_seconds(pids, ticks);
    let bench_before = procs::cpu_seconds(&me, ticks);
    let (mut result, late) = match load {
        Load::Closed(concurrency) => (load::run_for(client, concurrency, duration).await, 0),
        Load::Paced {
            rate,
            max_in_flight,
        } => load::run_paced(client, rate, max_in_flight, duration).await,
    };
    let cpu_after = procs::cpu_seconds(pids, ticks);
    let bench_after = procs::cpu_seconds(&me, ticks);
    let wall_s = result.wall.as_secs_f64();
    result.latencies_us.sort_unstable();
    let ms = |q: f64| quantile(&result.latencies_us, q) / 1000.0;
    Sample {
        calls: result.calls,
        errors: result.errors,
        late,
        first_error: result.first_error,
        calls_per_s: result.calls as f64 / wall_s,
        mib_per_s: result.bytes as f64 / MIB / wall_s,
        p50_ms: ms(0.50),
        p99_ms: ms(0.99),
        max_ms: ms(1.0),
        cpu_s: (!pids.is_empty()).then_some(cpu_after - cpu_before),
        bench_cpu_pct: 100.0 * (bench_after - bench_before) / wall_s,
        wall_s,
        bytes: result.bytes,
        peak_rss_mib: rss_reset.then(|| procs::status_kib(pids, "VmHWM") as f64 / 1024.0),
        accepted: servers
            .iter()
            .zip(accepted_before)
            .map(|(s, before)| s.stats.accepted() - before)
            .collect(),
    }
}

fn slow_title(settings: &Settings) -> String {
    format!(
        "slow consumer: one Submit streaming {} MiB (1 MiB messages), read at {} MiB/s",
        settings.slow_mib, settings.slow_rate_mib
    )
}

async fn run_slow(
    settings: &Settings,
    fronts: &Fronts,
    route: Route,
    payloads: &Arc<Payloads>,
    ticks: f64,
) -> anyhow::Result<SlowFigures> {
    let servers = fake::start(1, payloads).await?;
    let response = (settings.slow_mib, LARGE);
    let expected = payloads.response_len(settings.slow_mib, LARGE);
    let client = Client::new(
        route,
        fronts.addr(route),
        &[servers[0].addr],
        response,
        expected,
    )
    .await?;
    let pids = fronts.pids(route);
    let rss_reset = procs::reset_peak_rss(&pids);
    let cpu_before = procs::cpu_seconds(&pids, ticks);
    let samples = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let (samples, done, pids) = (samples.clone(), done.clone(), pids.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while !done.load(Ordering::Relaxed) {
                tick.tick().await;
                let kib = procs::status_kib(&pids, "VmRSS");
                samples.lock().expect("not poisoned").push(kib);
            }
        }
    });
    let started = Instant::now();
    let result = load::slow_call(&client, settings.slow_rate_mib * MIB).await;
    let secs = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let cpu = procs::cpu_seconds(&pids, ticks) - cpu_before;
    let rss: Vec<f64> = samples
        .lock()
        .expect("not poisoned")
        .iter()
        .map(|&kib| kib as f64 / 1024.0)
        .collect();
    let bytes = *result.as_ref().unwrap_or(&0);
    Ok(SlowFigures {
        route,
        bytes,
        secs,
        error: result.err().map(|err| format!("{err:#}")),
        rss_samples: rss.len(),
        rss_max_mib: rss.iter().copied().reduce(f64::max),
        rss_median_mib: median(rss),
        peak_rss_mib: rss_reset.then(|| procs::status_kib(&pids, "VmHWM") as f64 / 1024.0),
        cpu_s_per_gib: (bytes > 0).then(|| cpu / (bytes as f64 / GIB)),
    })
}

fn print_table(settings: &Settings, workload: &Workload, result: &WorkloadResult) {
    println!(
        "({}) {}\n    median of {} runs x {} s",
        workload.key, workload.title, settings.runs, settings.run_secs
    );
    print_figures(&result.figures, workload.servers > 1);
    print_ratios(&result.figures, workload.key == 'a');
    if let Some(open) = &result.open_after {
        println!(
            "    connections open at each server after the runs, clients closed (held by the \
             proxy's pool; nginx keeps none): min {}, max {}",
            open.iter().min().unwrap_or(&0),
            open.iter().max().unwrap_or(&0)
        );
    }
    if !result.paced.is_empty() {
        println!(
            "  ({}) latency below saturation: the same calls started at {} calls/s \
             (open loop, at most {} in flight)",
            workload.key, settings.paced_rate, workload.concurrency
        );
        print_figures(&result.paced, false);
        print_ratios(&result.paced, false);
    }
    println!();
}

fn print_figures(figures: &[Figures], conns: bool) {
    let mut header = format!(
        "{:<13}{:>9}{:>9}{:>8}{:>8}{:>8}{:>10}{:>10}{:>7}{:>7}{:>9}{:>7}",
        "target",
        "calls/s",
        "MiB/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "CPU s/GiB",
        "CPU s/10k",
        "CPU %",
        "load %",
        "RSS MiB",
        "errors"
    );
    if conns {
        header.push_str(&format!("{:>11}{:>9}", "new conns", "reuse %"));
    }
    println!("{header}");
    for f in figures {
        let mut line = format!(
            "{:<13}{:>9}{:>9}{:>8}{:>8}{:>8}{:>10}{:>10}{:>7}{:>7}{:>9}{:>7}",
            f.route.name(),
            cell(f.calls_per_s),
            cell(f.mib_per_s),
            cell(f.p50_ms),
            cell(f.p99_ms),
            cell(f.max_ms),
            cell(f.cpu_s_per_gib),
            cell(f.cpu_s_per_10k_calls),
            cell(f.cpu_pct),
            cell(f.bench_cpu_pct),
            cell(f.peak_rss_mib),
            f.errors
        );
        if conns {
            line.push_str(&format!(
                "{:>11}{:>9}",
                f.new_conns_total,
                cell(Some(f.reuse_pct))
            ));
        }
        println!("{line}");
        if let Some(err) = &f.first_error {
            println!("    first error: {err}");
        }
        if f.late > 0 {
            println!("    {} calls started late: all slots were busy", f.late);
        }
    }
}

/// One line per proxy route: throughput, CPU and p99 against direct and nginx.
fn print_ratios(figures: &[Figures], bytes: bool) {
    let find = |route| figures.iter().find(|f| f.route == route);
    let div = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
    let (direct, nginx) = (find(Route::Direct), find(Route::Nginx));
    let (unit, cpu_unit) = if bytes {
        ("MiB/s", "CPU/GiB")
    } else {
        ("calls/s", "CPU/call")
    };
    let value = |f: &Figures| if bytes { f.mib_per_s } else { f.calls_per_s };
    let cpu = |f: &Figures| {
        if bytes {
            f.cpu_s_per_gib
        } else {
            f.cpu_s_per_10k_calls
        }
    };
    for proxy in figures.iter().filter(|f| f.route.is_proxy()) {
        println!(
            "    {}: {unit} {} of direct, {} of nginx; {cpu_unit} {} of nginx; p99 {} ms over direct",
            proxy.route.name(),
            ratio(direct.and_then(|d| div(value(proxy), value(d)))),
            ratio(nginx.and_then(|n| div(value(proxy), value(n)))),
            ratio(nginx.and_then(|n| div(cpu(proxy), cpu(n)))),
            direct
                .and_then(|d| Some(proxy.p99_ms? - d.p99_ms?))
                .map_or("-".into(), |added| format!("{added:+.2}")),
        );
    }
}

fn print_slow(settings: &Settings, slow: &[SlowFigures]) {
    println!("(d) {}", slow_title(settings));
    println!(
        "{:<13}{:>10}{:>8}{:>9}{:>14}{:>14}{:>12}{:>11}",
        "target", "MiB", "secs", "MiB/s", "RSS max MiB", "RSS med MiB", "peak MiB", "CPU s/GiB"
    );
    for s in slow {
        println!(
            "{:<13}{:>10}{:>8}{:>9}{:>14}{:>14}{:>12}{:>11}",
            s.route.name(),
            cell(Some(s.bytes as f64 / MIB)),
            cell(Some(s.secs)),
            cell(Some(s.bytes as f64 / MIB / s.secs)),
            cell(s.rss_max_mib),
            cell(s.rss_median_mib),
            cell(s.peak_rss_mib),
            cell(s.cpu_s_per_gib),
        );
        if let Some(err) = &s.error {
            println!("    error: {err}");
        }
    }
    println!("    RSS sampled every 100 ms during the stream (nginx: master + workers summed)\n");
}

fn workload_json(workload: &Workload, result: &WorkloadResult) -> Json {
    let mut fields = vec![
        ("key", Json::str(workload.key.to_string())),
        ("title", Json::str(workload.title)),
        ("messages_per_call", Json::Num(workload.messages as f64)),
        ("message_bytes", Json::Num(workload.size as f64)),
        ("calls_in_flight", Json::Num(workload.concurrency as f64)),
        ("servers", Json::Num(workload.servers as f64)),
        (
            "targets",
            Json::Arr(result.figures.iter().map(Figures::to_json).collect()),
        ),
        ("ratios", ratios_json(&result.figures)),
    ];
    if let Some(open) = &result.open_after {
        fields.push((
            "open_conns_per_server_after",
            Json::Arr(open.iter().map(|&n| Json::Num(n as f64)).collect()),
        ));
    }
    if !result.paced.is_empty() {
        fields.push((
            "paced",
            Json::obj([
                (
                    "targets",
                    Json::Arr(result.paced.iter().map(Figures::to_json).collect()),
                ),
                ("ratios", ratios_json(&result.paced)),
            ]),
        ));
    }
    Json::obj(fields)
}

fn ratios_json(figures: &[Figures]) -> Json {
    let find = |route| figures.iter().find(|f| f.route == route);
    let div = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
    let mut ratios = Vec::new();
    for proxy in figures.iter().filter(|f| f.route.is_proxy()) {
        for (base_name, base) in [
            ("direct", find(Route::Direct)),
            ("nginx", find(Route::Nginx)),
        ] {
            let Some(base) = base else { continue };
            ratios.push(Json::obj([
                ("target", Json::str(proxy.route.name())),
                ("vs", Json::str(base_name)),
                (
                    "calls_per_s",
                    Json::opt(div(proxy.calls_per_s, base.calls_per_s)),
                ),
                ("mib_per_s", Json::opt(div(proxy.mib_per_s, base.mib_per_s))),
                (
                    "cpu_s_per_gib",
                    Json::opt(div(proxy.cpu_s_per_gib, base.cpu_s_per_gib)),
                ),
                (
                    "p99_added_ms",
                    Json::opt(proxy.p99_ms.zip(base.p99_ms).map(|(p, b)| p - b)),
                ),
            ]));
        }
    }
    Json::Arr(ratios)
}

fn evaluate(results: &[(&Workload, WorkloadResult)], slow: &[SlowFigures]) -> Vec<Check> {
    let mut checks = Vec::new();
    let get = |key: char| {
        results
            .iter()
            .find(|(w, _)| w.key == key)
            .map(|(_, result)| result)
    };
    let proxies = [Route::ProxyHeader, Route::ProxyBody];
    let check = |pass: Option<bool>, id, text: String, detail: String| Check {
        id,
        text,
        pass,
        detail,
    };
    if let Some(WorkloadResult { figures, .. }) = get('a') {
        let find = |route| figures.iter().find(|f| f.route == route);
        for proxy in proxies.iter().filter_map(|&r| find(r)) {
            let name = proxy.route.name();
            let direct = find(Route::Direct).and_then(|d| d.mib_per_s);
            let nginx = find(Route::Nginx);
            let mib = proxy.mib_per_s;
            checks.push(check(
                ge(mib, direct.map(|d| 0.8 * d)),
                "a1",
                format!("(a) {name} MiB/s >= 0.8 x direct"),
                format!("{} vs 0.8 x {}", cell(mib), cell(direct)),
            ));
            let nginx_mib = nginx.and_then(|n| n.mib_per_s);
            checks.push(check(
                ge(mib, nginx_mib.map(|n| 1.3 * n)),
                "a2",
                format!("(a) {name} MiB/s >= 1.3 x nginx"),
                format!("{} vs 1.3 x {}", cell(mib), cell(nginx_mib)),
            ));
            let nginx_cpu = nginx.and_then(|n| n.cpu_s_per_gib);
            checks.push(check(
                ge(nginx_cpu, proxy.cpu_s_per_gib),
                "a3",
                format!("(a) {name} CPU s/GiB <= nginx"),
                format!("{} vs {}", cell(proxy.cpu_s_per_gib), cell(nginx_cpu)),
            ));
        }
    }
    if let Some(WorkloadResult { figures, paced, .. }) = get('b') {
        let find = |route| figures.iter().find(|f| f.route == route);
        let find_paced = |route| paced.iter().find(|f| f.route == route);
        for proxy in proxies.iter().filter_map(|&r| find(r)) {
            let name = proxy.route.name();
            let nginx = find(Route::Nginx).and_then(|n| n.calls_per_s);
            checks.push(check(
                ge(proxy.calls_per_s, nginx.map(|n| 2.0 * n)),
                "b1",
                format!("(b) {name} calls/s >= 2 x nginx"),
                format!("{} vs 2 x {}", cell(proxy.calls_per_s), cell(nginx)),
            ));
            // Added latency is judged below saturation: at saturation each route runs at its
            // own calls/s, and p99 is mostly queueing (64 in flight / calls/s).
            let added = |p: Option<&Figures>, d: Option<&Figures>| Some(p?.p99_ms? - d?.p99_ms?);
            let paced_added = added(find_paced(proxy.route), find_paced(Route::Direct));
            let saturated_added = added(Some(proxy), find(Route::Direct));
            checks.push(check(
                ge(Some(1.0), paced_added),
                "b2",
                format!("(b) {name} p99 added over direct <= 1 ms (paced)"),
                format!(
                    "{} ms paced; {} ms at saturation",
                    paced_added.map_or("-".into(), |a| format!("{a:+.2}")),
                    saturated_added.map_or("-".into(), |a| format!("{a:+.2}")),
                ),
            ));
        }
    }
    if let Some(result) = get('c') {
        for proxy in result.figures.iter().filter(|f| f.route.is_proxy()) {
            let max_open = result
                .open_after
                .as_ref()
                .and_then(|o| o.iter().max().copied());
            let pass = proxy.reuse_pct >= 99.0 && max_open.is_some_and(|n| n <= 1);
            checks.push(check(
                Some(pass),
                "c1",
                format!(
                    "(c) {} at most 1 upstream connection per target after warm-up, reuse >= 99 %",
                    proxy.route.name()
                ),
                format!(
                    "reuse {} %, {} new conns in {} calls, max open per server {}",
                    cell(Some(proxy.reuse_pct)),
                    proxy.new_conns_total,
                    proxy.calls,
                    max_open.map_or("-".into(), |n| n.to_string())
                ),
            ));
        }
    }
    for s in slow.iter().filter(|s| s.route.is_proxy()) {
        let pass = s.error.is_none() && s.rss_max_mib.is_some_and(|m| m < 64.0);
        checks.push(check(
            Some(pass),
            "d1",
            format!("(d) {} RSS < 64 MiB for the whole stream", s.route.name()),
            format!(
                "max sampled {} MiB, peak (VmHWM) {} MiB{}",
                cell(s.rss_max_mib),
                cell(s.peak_rss_mib),
                s.error
                    .as_ref()
                    .map_or(String::new(), |e| format!(", error: {e}"))
            ),
        ));
    }
    checks
}

/// `a >= b`, or None when either is unknown.
fn ge(a: Option<f64>, b: Option<f64>) -> Option<bool> {
    Some(a? >= b?)
}

fn print_checks(checks: &[Check]) {
    println!("targets (issue 6):");
    for c in checks {
        let verdict = match c.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "n/a ",
        };
        println!("  {verdict}  {:<70} {}", c.text, c.detail);
    }
}

/// Warns when the proxy binary is older than the sources it is built from.
fn warn_if_stale(binary: &Path) {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Ok(built) = std::fs::metadata(binary).and_then(|m| m.modified()) else {
        return;
    };
    let newest = std::fs::read_dir(manifest.join("src"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.metadata().ok()?.modified().ok())
        .chain(std::fs::metadata(manifest.join("Cargo.toml")).and_then(|m| m.modified()))
        .max();
    if newest.is_some_and(|newest| newest > built) {
        eprintln!(
            "bench: warning: {} is older than src/ or Cargo.toml; bench/run.sh rebuilds it",
            binary.display()
        );
    }
}

fn machine_json(settings: &Settings) -> Json {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let meminfo = read("/proc/meminfo");
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0 / 1024.0);
    let os = read("/etc/os-release")
        .lines()
        .find(|l| l.starts_with("PRETTY_NAME="))
        .map(|l| {
            l.trim_start_matches("PRETTY_NAME=")
                .trim_matches('"')
                .to_string()
        })
        .unwrap_or_default();
    let git = std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "describe",
            "--always",
            "--dirty",
        ])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Json::obj([
        ("cpu", Json::str(cpu)),
        ("cores", Json::Num(cores as f64)),
        ("mem_gib", Json::opt(mem_gib)),
        ("os", Json::str(os)),
        (
            "kernel",
            Json::str(read("/proc/sys/kernel/osrelease").trim()),
        ),
        ("proxy_git", Json::str(git)),
        (
            "proxy_binary",
            Json::str(settings.proxy_bin.display().to_string()),
        ),
        (
            "proxy_threads",
            Json::str(format!("tokio multi-thread default: {cores} workers")),
        ),
        (
            "nginx",
            settings
                .nginx_bin
                .as_deref()
                .and_then(procs::nginx_version)
                .map_or(Json::Null, Json::Str),
        ),
    ])
}

fn machine_line(machine: &Json) -> String {
    let Json::Obj(fields) = machine else {
        return String::new();
    };
    let get = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| match v {
                Json::Str(s) => s.clone(),
                Json::Num(n) if n.fract() == 0.0 => format!("{n}"),
                Json::Num(n) => format!("{n:.1}"),
                _ => "-".into(),
            })
            .unwrap_or_default()
    };
    format!(
        "{} cores ({}), {} GiB, {}, kernel {}; pinot-proxy {}; nginx {}",
        get("cores"),
        get("cpu"),
        get("mem_gib"),
        get("os"),
        get("kernel"),
        match get("proxy_git") {
            git if git.is_empty() => "(not a git checkout)".to_string(),
            git => git,
        },
        get("nginx"),
    )
}

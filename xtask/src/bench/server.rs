//! `cargo xtask bench server`: Debian's nginx, configured as the fleet runs it, and
//! mirror-server on the same tree, interleaved round by round, on loopback. Small-file and
//! HEAD workloads use wrk; large files use our own client that reads 4 MiB at a time (wrk's
//! 8 KiB reads would make wrk the bottleneck). HTTPS workloads give both servers the same
//! certificate; large HTTPS files are fetched by curl. Prints both figures and the ratio.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{median, proc_cpu_seconds, proc_peak_rss, Row};
use crate::cmd::{self, cmd};
use crate::paths;

pub struct Options {
    pub seconds: u64,
    pub rounds: usize,
    pub only: Option<String>,
}

struct Server {
    name: &'static str,
    child: Child,
    ports: Ports,
}

/// Plain HTTP and HTTPS ports of a server under test.
#[derive(Clone, Copy)]
struct Ports {
    http: u16,
    https: u16,
}

/// A self-signed certificate for 127.0.0.1, shared by both servers: (certificate, key).
fn bench_certificate(work: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let (cert, key) = (work.join("bench-cert.pem"), work.join("bench-key.pem"));
    if !cert.exists() || !key.exists() {
        let sh = cmd::shell()?;
        cmd::run(cmd!(
            sh,
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30
                -subj /CN=bench -addext subjectAltName=IP:127.0.0.1 -keyout {key} -out {cert}"
        ))?;
    }
    Ok((cert, key))
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process_group(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        );
        let _ = self.child.wait();
    }
}

impl Server {
    /// Every process of the server (nginx: master and workers).
    fn pids(&self) -> Vec<i32> {
        let root = self.child.id() as i32;
        let mut pids = vec![root];
        if let Ok(rd) = fs_err::read_dir("/proc") {
            for e in rd.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
                let stat = fs_err::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let ppid = stat
                    .rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().nth(1))
                    .and_then(|p| p.parse::<i32>().ok());
                if ppid == Some(root) {
                    pids.push(pid);
                }
            }
        }
        pids
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(18080)
}

fn wait_port(port: u16) -> Result<()> {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("nothing listens on {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The tree both servers serve.
pub fn make_tree(dir: &Path) -> Result<()> {
    let marker = dir.join(".complete");
    if marker.exists() {
        return Ok(());
    }
    fs_err::create_dir_all(dir.join("listing"))?;
    fs_err::create_dir_all(dir.join("many"))?;
    fs_err::write(dir.join("small.bin"), vec![7u8; 4096])?;
    fs_err::write(dir.join("medium.bin"), vec![9u8; 1 << 20])?;
    let mut big = fs_err::File::create(dir.join("big.iso"))?;
    let chunk: Vec<u8> = (0..(8u32 << 20)).map(|i| (i % 251) as u8).collect();
    for _ in 0..128 {
        big.write_all(&chunk)?;
    }
    for i in 0..5000 {
        fs_err::write(dir.join(format!("listing/package-{i:05}-1.0-1.x86_64.rpm")), b"x")?;
    }
    for i in 0..10_000 {
        fs_err::write(dir.join(format!("many/f{i:05}.rpm")), b"rpm")?;
    }
    fs_err::write(marker, b"")?;
    Ok(())
}

fn start_nginx(tree: &Path, work: &Path) -> Result<Server> {
    let ports = Ports { http: free_port(), https: free_port() };
    let (cert, key) = bench_certificate(work)?;
    let conf = work.join("nginx.conf");
    fs_err::write(
        &conf,
        format!(
            "worker_processes 2;\ndaemon off;\npid {work}/nginx.pid;\nerror_log {work}/nginx-error.log;\nevents {{ worker_connections 4096; }}\nhttp {{\n  include /etc/nginx/mime.types;\n  default_type application/octet-stream;\n  sendfile on; tcp_nopush on; tcp_nodelay on; keepalive_timeout 65; keepalive_requests 1000000;\n  access_log {work}/nginx-access.log combined;\n  client_body_temp_path {work}/tmp;\n  server {{ listen 127.0.0.1:{http}; listen 127.0.0.1:{https} ssl; ssl_certificate {cert}; ssl_certificate_key {key}; ssl_protocols TLSv1.2 TLSv1.3; root {tree}; autoindex on; }}\n}}\n",
            work = work.display(),
            tree = tree.display(),
            http = ports.http,
            https = ports.https,
            cert = cert.display(),
            key = key.display(),
        ),
    )?;
    fs_err::create_dir_all(work.join("tmp"))?;
    use std::os::unix::process::CommandExt;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting nginx")?;
    wait_port(ports.http)?;
    wait_port(ports.https)?;
    Ok(Server { name: "nginx", child, ports })
}

fn start_mirror_server(tree: &Path, work: &Path, env: &[(&str, &str)]) -> Result<Server> {
    let ports = Ports { http: free_port(), https: free_port() };
    let (cert, key) = bench_certificate(work)?;
    let bin = paths::target().join("release/mirror-server");
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(&bin);
    command
        .arg("--root")
        .arg(tree)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", ports.http))
        .arg("--tls-listen")
        .arg(format!("127.0.0.1:{}", ports.https))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--access-log")
        .arg(work.join("mirror-server-access.log"))
        .arg("--no-scavenger")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let child = command.spawn().with_context(|| format!("starting {}", bin.display()))?;
    wait_port(ports.http)?;
    wait_port(ports.https)?;
    Ok(Server { name: "mirror-server", child, ports })
}

/// What one run of a workload measured.
#[derive(Default, Clone, Copy)]
struct Sample {
    rps: f64,
    mbps: f64,
    p99_ms: f64,
    cpu_s_per_gb: f64,
}

fn wrk(url: &str, conns: u32, seconds: u64) -> Result<(f64, f64, f64)> {
    let (conns, seconds) = (format!("-c{conns}"), format!("-d{seconds}s"));
    let sh = cmd::shell()?;
    let out = cmd::run(cmd!(sh, "wrk -t2 {conns} {seconds} --latency --timeout 10s {url}"))?;
    let rps =
        out.lines().find_map(|l| l.strip_prefix("Requests/sec:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0);
    let transfer =
        out.lines().find_map(|l| l.strip_prefix("Transfer/sec:")).map(|v| parse_size(v.trim())).unwrap_or(0.0);
    let p99 = out.lines().find_map(|l| l.trim().strip_prefix("99%")).map(|v| parse_ms(v.trim())).unwrap_or(0.0);
    Ok((rps, transfer / 1e6, p99))
}

fn parse_size(v: &str) -> f64 {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse().unwrap_or(0.0);
    n * match unit {
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        _ => 1.0,
    }
}

fn parse_ms(v: &str) -> f64 {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse().unwrap_or(0.0);
    n * match unit {
        "us" => 0.001,
        "s" => 1000.0,
        _ => 1.0,
    }
}

/// `conns` clients each fetching `path` over and over for `seconds`, reading 4 MiB at a time.
fn big_reads(port: u16, path: &str, conns: usize, seconds: u64) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let handles: Vec<_> = (0..conns)
        .map(|_| {
            let path = path.to_string();
            std::thread::spawn(move || -> u64 {
                let mut total = 0u64;
                let mut buf = vec![0u8; 4 << 20];
                let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return 0 };
                while Instant::now() < deadline {
                    if s.write_all(format!("GET {path} HTTP/1.1\r\nHost: b\r\n\r\n").as_bytes()).is_err() {
                        return total;
                    }
                    // Head, then exactly Content-Length bytes.
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if s.read(&mut byte).unwrap_or(0) == 0 {
                            return total;
                        }
                        head.push(byte[0]);
                    }
                    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    let len: u64 = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    let mut left = len;
                    while left > 0 {
                        let want = left.min(buf.len() as u64) as usize;
                        match s.read(&mut buf[..want]) {
                            Ok(0) | Err(_) => return total,
                            Ok(n) => {
                                left -= n as u64;
                                total += n as u64;
                            }
                        }
                        if Instant::now() > deadline + Duration::from_secs(30) {
                            return total;
                        }
                    }
                }
                total
            })
        })
        .collect();
    let bytes: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    Ok(bytes as f64 / start.elapsed().as_secs_f64() / 1e6)
}

/// `conns` curl processes fetching `url` over HTTPS back to back for `seconds`; MB/s.
fn curl_reads(url: &str, conns: usize, seconds: u64) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let handles: Vec<_> = (0..conns)
        .map(|_| {
            let url = url.to_string();
            std::thread::spawn(move || -> u64 {
                let mut total = 0u64;
                while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                    let out = Command::new("curl")
                        .args(["-sk", "-o", "/dev/null", "-w", "%{size_download}", "--max-time"])
                        .arg(format!("{:.2}", left.as_secs_f64().max(0.1)))
                        .arg(&url)
                        .output();
                    // curl stops at --max-time (exit 28) and still says how much it received.
                    let got = out.ok().and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<u64>().ok());
                    match got {
                        Some(n) if n > 0 => total += n,
                        _ => break,
                    }
                }
                total
            })
        })
        .collect();
    let bytes: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    Ok(bytes as f64 / start.elapsed().as_secs_f64() / 1e6)
}

/// `conns` keep-alive connections sending HEAD for random files of /many (wrk cannot: its
/// parser waits for a body after a HEAD answer). Returns (requests/s, p99 ms).
fn heads(port: u16, conns: usize, seconds: u64) -> Result<(f64, f64, f64)> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let handles: Vec<_> = (0..conns)
        .map(|c| {
            std::thread::spawn(move || -> (u64, Vec<f64>) {
                let mut latencies = Vec::new();
                let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return (0, latencies) };
                let _ = s.set_nodelay(true);
                let mut files = fastrand::Rng::with_seed(c as u64);
                let mut buf = [0u8; 4096];
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let req = format!("HEAD /many/f{:05}.rpm HTTP/1.1\r\nHost: b\r\n\r\n", files.u32(..10_000));
                    if s.write_all(req.as_bytes()).is_err() {
                        break;
                    }
                    let mut got = Vec::new();
                    while !got.ends_with(b"\r\n\r\n") {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return (latencies.len() as u64, latencies),
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                (latencies.len() as u64, latencies)
            })
        })
        .collect();
    let mut total = 0;
    let mut all = Vec::new();
    for h in handles {
        if let Ok((n, l)) = h.join() {
            total += n;
            all.extend(l);
        }
    }
    all.sort_by(|a, b| a.total_cmp(b));
    let p99 = all.get(all.len() * 99 / 100).copied().unwrap_or(0.0);
    Ok((total as f64 / start.elapsed().as_secs_f64(), 0.0, p99))
}

fn machine_cpu_seconds() -> f64 {
    let stat = fs_err::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq: busy = all but idle and iowait.
    let busy: f64 = fields.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    busy / 100.0
}

/// (requests/s, MB/s, p99 ms) from a run against a server for some seconds.
type Measure = Box<dyn Fn(Ports, u64) -> Result<(f64, f64, f64)>>;

struct Workload {
    name: &'static str,
    /// One stream: the server runs on CPU 0 and the client on CPU 1. Unpinned, the figure
    /// mostly says where the scheduler put the two (±20 % from run to run).
    pinned: bool,
    run: Measure,
}

/// Restricts every thread of the given processes to one CPU.
fn pin_processes(pids: &[i32], cpu: usize) {
    for pid in pids {
        let Ok(tasks) = fs_err::read_dir(format!("/proc/{pid}/task")) else { continue };
        for task in tasks.flatten() {
            if let Ok(tid) = task.file_name().to_string_lossy().parse::<i32>() {
                set_affinity(tid, Some(cpu));
            }
        }
    }
}

/// The appliance's unit gives LimitNOFILE=65536 (mirror-server sizes its open-file cache from
/// it): the limit is raised towards that here, as far as this machine's hard limit allows, and
/// both servers inherit it.
fn open_file_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let hard = getrlimit(Resource::Nofile).maximum.unwrap_or(65536);
    let want = hard.min(65536);
    let raised = setrlimit(Resource::Nofile, Rlimit { current: Some(want), maximum: Some(hard) }).is_ok();
    let now = getrlimit(Resource::Nofile).current.unwrap_or(want);
    if !raised {
        eprintln!("[bench] could not raise the open-file limit; it stays at {now}");
    }
    now
}

/// One CPU, or all of them (None), for a thread (0: the calling one). Threads and processes it
/// starts afterwards inherit the setting.
fn set_affinity(tid: i32, cpu: Option<usize>) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut set = rustix::thread::CpuSet::new();
    for c in (0..cpus).filter(|c| cpu.is_none_or(|only| only == *c)) {
        set.set(c);
    }
    let _ = rustix::thread::sched_setaffinity(rustix::process::Pid::from_raw(tid), &set);
}

fn http(p: Ports, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", p.http)
}

fn https(p: Ports, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", p.https)
}

fn workloads() -> Result<Vec<Workload>> {
    let throughput = |m: f64| (0.0, m, 0.0);
    Ok(vec![
        Workload {
            name: "4 KiB file, 64 conns",
            pinned: false,
            run: Box::new(|p, s| wrk(&http(p, "/small.bin"), 64, s)),
        },
        Workload {
            name: "1 MiB file, 16 conns",
            pinned: false,
            run: Box::new(|p, s| wrk(&http(p, "/medium.bin"), 16, s)),
        },
        Workload {
            name: "1 GiB file, 1 conn",
            pinned: true,
            run: Box::new(move |p, s| big_reads(p.http, "/big.iso", 1, s).map(throughput)),
        },
        Workload {
            name: "1 GiB file, 16 conns",
            pinned: false,
            run: Box::new(move |p, s| big_reads(p.http, "/big.iso", 16, s).map(throughput)),
        },
        Workload {
            name: "listing, 5000 entries, 16 conns",
            pinned: false,
            run: Box::new(|p, s| wrk(&http(p, "/listing/"), 16, s)),
        },
        Workload {
            name: "HEAD over 10,000 files, 64 conns",
            pinned: false,
            run: Box::new(|p, s| heads(p.http, 64, s)),
        },
        Workload {
            name: "HTTPS 4 KiB file, 64 conns",
            pinned: false,
            run: Box::new(|p, s| wrk(&https(p, "/small.bin"), 64, s)),
        },
        Workload {
            name: "HTTPS 1 GiB file, 1 conn",
            pinned: true,
            run: Box::new(move |p, s| curl_reads(&https(p, "/big.iso"), 1, s).map(throughput)),
        },
        Workload {
            name: "HTTPS 1 GiB file, 16 conns",
            pinned: false,
            run: Box::new(move |p, s| curl_reads(&https(p, "/big.iso"), 16, s).map(throughput)),
        },
    ])
}

pub fn run(opts: &Options) -> Result<Vec<Row>> {
    let work = paths::target().join("bench/server");
    let tree = work.join("tree");
    fs_err::create_dir_all(&work)?;
    let nofile = open_file_limit();
    eprintln!("[bench] open-file limit for both servers: {nofile} (the appliance's unit gives 65536)");
    eprintln!("[bench] preparing the tree in {}", tree.display());
    make_tree(&tree)?;
    // Warm the page cache: both servers read the same cached bytes.
    let _ = Command::new("cat").arg(tree.join("big.iso")).stdout(Stdio::null()).status();
    let mut results: Vec<(String, Vec<Sample>, Vec<Sample>)> = Vec::new();
    let loads: Vec<Workload> =
        workloads()?.into_iter().filter(|w| opts.only.as_ref().is_none_or(|o| w.name.contains(o.as_str()))).collect();
    if loads.is_empty() {
        bail!("no workload matches --only {:?}", opts.only.as_deref().unwrap_or(""));
    }
    let mut peak = [0u64; 2];
    for w in &loads {
        let mut per = [Vec::new(), Vec::new()];
        for round in 0..opts.rounds {
            for (i, which) in [0usize, 1].iter().enumerate() {
                let server =
                    if *which == 0 { start_nginx(&tree, &work)? } else { start_mirror_server(&tree, &work, &[])? };
                let pids = server.pids();
                let pinned = w.pinned && std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
                if pinned {
                    pin_processes(&pids, 0);
                    set_affinity(0, Some(1));
                }
                let cpu0 = proc_cpu_seconds(&pids);
                let m0 = machine_cpu_seconds();
                let measured = (w.run)(server.ports, opts.seconds);
                set_affinity(0, None);
                let (rps, mbps, p99) = measured?;
                let cpu = proc_cpu_seconds(&server.pids()) - cpu0;
                let machine = machine_cpu_seconds() - m0;
                let gb = mbps * opts.seconds as f64 / 1000.0;
                peak[i] = peak[i].max(proc_peak_rss(&server.pids()));
                let s = Sample { rps, mbps, p99_ms: p99, cpu_s_per_gb: if gb > 0.0 { cpu / gb } else { 0.0 } };
                eprintln!("[bench] {} round {}: {} {:.0} req/s {:.0} MB/s p99 {:.2} ms, {:.2} server CPU s/GB ({:.2} machine)", w.name, round + 1, server.name, rps, mbps, p99, s.cpu_s_per_gb, if gb > 0.0 { machine / gb } else { 0.0 });
                per[i].push(s);
            }
        }
        let [a, b] = per;
        results.push((w.name.to_string(), a, b));
    }
    let mut rows = Vec::new();
    for (name, nginx, ms) in results {
        let pick = |v: &[Sample], f: fn(&Sample) -> f64| median(v.iter().map(f).collect());
        let big = name.contains("GiB");
        let (metric, unit, f): (&str, &str, fn(&Sample) -> f64) = if big || name.contains("1 MiB") {
            ("throughput", "MB/s", |s| s.mbps)
        } else {
            ("requests", "req/s", |s| s.rps)
        };
        let (n, m) = (pick(&nginx, f), pick(&ms, f));
        rows.push(Row {
            workload: format!("{name}: {metric}"),
            peer: n,
            ours: m,
            unit: unit.into(),
            higher_is_better: true,
        });
        if !big {
            rows.push(Row {
                workload: format!("{name}: p99 latency"),
                peer: pick(&nginx, |s| s.p99_ms),
                ours: pick(&ms, |s| s.p99_ms),
                unit: "ms".into(),
                higher_is_better: false,
            });
        }
        if big || name.contains("1 MiB") {
            rows.push(Row {
                workload: format!("{name}: server CPU per GB"),
                peer: pick(&nginx, |s| s.cpu_s_per_gb),
                ours: pick(&ms, |s| s.cpu_s_per_gb),
                unit: "s/GB".into(),
                higher_is_better: false,
            });
        }
    }
    rows.push(Row {
        workload: "peak RSS (all processes)".into(),
        peer: peak[0] as f64 / 1048576.0,
        ours: peak[1] as f64 / 1048576.0,
        unit: "MiB".into(),
        higher_is_better: false,
    });
    Ok(rows)
}

/// Requests per second of the 4 KiB workload with mirror-server's live capacity accounting on
/// and off (`MIRROR_SERVER_NO_CAPACITY_ACCOUNTING`), interleaved round by round: (on, off),
/// medians.
pub fn accounting_cost(seconds: u64, rounds: usize) -> Result<(f64, f64)> {
    let work = paths::target().join("bench/server");
    let tree = work.join("tree");
    fs_err::create_dir_all(&work)?;
    make_tree(&tree)?;
    let w = workloads()?.into_iter().find(|w| w.name.contains("4 KiB")).context("the 4 KiB workload")?;
    let mut per = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for (i, env) in [vec![], vec![("MIRROR_SERVER_NO_CAPACITY_ACCOUNTING", "1")]].iter().enumerate() {
            let server = start_mirror_server(&tree, &work, env)?;
            let pinned = w.pinned && std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
            if pinned {
                pin_processes(&server.pids(), 0);
                set_affinity(0, Some(1));
            }
            let measured = (w.run)(server.ports, seconds);
            set_affinity(0, None);
            let (rps, _, _) = measured?;
            eprintln!("[bench] accounting {} round {}: {rps:.0} req/s", if i == 0 { "on" } else { "off" }, round + 1);
            per[i].push(rps);
        }
    }
    let [on, off] = per;
    Ok((median(on), median(off)))
}

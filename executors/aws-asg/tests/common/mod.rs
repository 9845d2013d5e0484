//! Shared test helpers: pools, a worker directory over a `Vec`, a moto_server harness with its
//! request log, and a small AWS Query-protocol HTTP double for answers moto cannot give.
#![allow(dead_code)]

use async_trait::async_trait;
use autoscaler_executor::{BusyWorker, DirectoryError, WorkerDirectory, WorkerPool};
use base64::Engine as _;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A pool as Vespene's UI makes it, set to this executor.
pub fn pool(id: i64, name: &str, command: &str, maximum: i32) -> WorkerPool {
    let mut p = WorkerPool::with_defaults(id, name);
    p.autoscaling_enabled = true;
    p.executor = Some("aws-asg".into());
    p.planner = Some("stock".into());
    p.executor_command = command.into();
    p.maximum = maximum;
    p
}

/// Busy workers from a list the test edits; or a database failure.
#[derive(Default)]
pub struct FakeDirectory {
    pub busy: Mutex<Vec<BusyWorker>>,
    pub fail: Mutex<bool>,
    pub calls: Mutex<u32>,
}

impl FakeDirectory {
    pub fn set(&self, busy: &[(&str, i64)]) {
        *self.busy.lock().unwrap() = busy
            .iter()
            .map(|(h, id)| BusyWorker {
                hostname: Some(h.to_string()),
                build_id: *id,
                started: None,
            })
            .collect();
    }
}

#[async_trait]
impl WorkerDirectory for FakeDirectory {
    async fn busy_workers(&self, _pool: &WorkerPool) -> Result<Vec<BusyWorker>, DirectoryError> {
        *self.calls.lock().unwrap() += 1;
        if *self.fail.lock().unwrap() {
            return Err(DirectoryError("connection refused".into()));
        }
        Ok(self.busy.lock().unwrap().clone())
    }
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A moto_server child on a free 127.0.0.1 port, recording every request it serves; killed
/// on drop.
pub struct Moto {
    child: Child,
    pub url: String,
    recording: PathBuf,
    _dir: tempfile::TempDir,
}

/// The moto_server binary: `MOTO_SERVER`, else `moto_server` on `PATH`. Missing is a test
/// failure, not a skip: CI must install it.
pub fn moto_binary() -> PathBuf {
    if let Ok(p) = std::env::var("MOTO_SERVER") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "MOTO_SERVER={} does not exist; install moto with `pip install 'moto[server]'`",
            p.display()
        );
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let c = dir.join("moto_server");
        if c.is_file() {
            return c;
        }
    }
    panic!(
        "moto_server not found: set MOTO_SERVER to its path or put it on PATH \
         (python3 -m venv V && V/bin/pip install 'moto[server]')"
    );
}

impl Moto {
    pub fn start() -> Moto {
        let bin = moto_binary();
        let dir = tempfile::tempdir().unwrap();
        let recording = dir.path().join("recording.jsonl");
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_ENABLE_RECORDING", "True")
            .env("MOTO_RECORDER_FILEPATH", &recording)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut moto = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
            recording,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = moto.child.try_wait().unwrap() {
                panic!("moto_server exited at start: {status}");
            }
            if http_get(port, "/moto-api/").is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// Forgets the requests served so far.
    pub fn clear_log(&self) {
        let _ = std::fs::remove_file(&self.recording);
    }

    /// Every request served since the last [`Moto::clear_log`], as (Action, parameters).
    pub fn log(&self) -> Vec<(String, Vec<(String, String)>)> {
        let Ok(text) = std::fs::read_to_string(&self.recording) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let mut body = v["body"].as_str().unwrap_or("").to_string();
            if v["body_encoded"].as_bool() == Some(true) {
                body = String::from_utf8(
                    base64::engine::general_purpose::STANDARD
                        .decode(body.as_bytes())
                        .unwrap(),
                )
                .unwrap();
            }
            let mut params = parse_form(&body);
            if let Some(q) = v["url"].as_str().and_then(|u| u.split_once('?')) {
                params.extend(parse_form(q.1));
            }
            let action = params
                .iter()
                .find(|(k, _)| k == "Action")
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| format!("{} {}", v["method"], v["url"]));
            out.push((action, params));
        }
        out
    }

    /// Count of each Action since the last clear.
    pub fn counts(&self) -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        for (a, _) in self.log() {
            *m.entry(a).or_insert(0) += 1;
        }
        m
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The AWS actions that change something (those this executor may call).
pub const MUTATING: &[&str] = &[
    "SetDesiredCapacity",
    "UpdateAutoScalingGroup",
    "CreateOrUpdateTags",
    "PutLifecycleHook",
    "CompleteLifecycleAction",
    "RecordLifecycleActionHeartbeat",
    "CreateTags",
    "TerminateInstanceInAutoScalingGroup",
    "PutWarmPool",
];

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.").then_some(out)
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let h =
                    u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16).unwrap();
                out.push(h);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// `a=1&b=x%20y` into pairs, decoded.
pub fn parse_form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

/// The value of `key` in form pairs.
pub fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// One request to the Query double.
#[derive(Clone, Debug)]
pub struct QueryRequest {
    pub action: String,
    pub params: Vec<(String, String)>,
}

/// An answer of the Query double: status and XML body.
pub struct QueryResponse {
    pub status: u16,
    pub body: String,
}

impl QueryResponse {
    pub fn ok(body: impl Into<String>) -> Self {
        QueryResponse {
            status: 200,
            body: body.into(),
        }
    }

    /// An AWS Query-protocol error document, as Auto Scaling sends it.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        QueryResponse {
            status,
            body: format!(
                "<ErrorResponse xmlns=\"https://autoscaling.amazonaws.com/doc/2011-01-01/\">\
                 <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>\
                 <RequestId>11111111-2222-3333-4444-555555555555</RequestId></ErrorResponse>"
            ),
        }
    }
}

type Handler = dyn Fn(&QueryRequest) -> QueryResponse + Send + Sync;

/// A minimal HTTP/1.1 server speaking the AWS Query protocol's wire format (form-encoded
/// requests, XML answers), for the answers moto cannot give: lifecycle waits, access denied,
/// throttling. Each request is logged.
pub struct QueryDouble {
    pub url: String,
    pub log: Arc<Mutex<Vec<QueryRequest>>>,
}

impl QueryDouble {
    pub fn start(handler: impl Fn(&QueryRequest) -> QueryResponse + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let log2 = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let handler = handler.clone();
                let log = log2.clone();
                std::thread::spawn(move || serve(stream, &*handler, &log));
            }
        });
        QueryDouble { url, log }
    }

    pub fn actions(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.action.clone())
            .collect()
    }
}

fn serve(mut stream: TcpStream, handler: &Handler, log: &Mutex<Vec<QueryRequest>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // Read one request: headers, then Content-Length bytes of body.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i;
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < head_end + 4 + len {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end + 4..head_end + 4 + len]).to_string();
        buf.drain(..head_end + 4 + len);
        let params = parse_form(&body);
        let req = QueryRequest {
            action: param(&params, "Action").unwrap_or("").to_string(),
            params,
        };
        log.lock().unwrap().push(req.clone());
        let resp = handler(&req);
        let reason = match resp.status {
            200 => "OK",
            400 => "Bad Request",
            403 => "Forbidden",
            503 => "Service Unavailable",
            _ => "Error",
        };
        let out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\
             x-amzn-RequestId: 11111111-2222-3333-4444-555555555555\r\n\r\n{}",
            resp.status,
            resp.body.len(),
            resp.body
        );
        if stream.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A `DescribeAutoScalingGroups` answer for one group, in Auto Scaling's XML.
pub fn describe_groups_xml(
    name: &str,
    min: u32,
    max: u32,
    desired: u32,
    instances: &[(&str, &str)],
    tags: &[(&str, &str)],
    policies: &[&str],
) -> String {
    let inst: String = instances
        .iter()
        .map(|(id, state)| {
            format!(
                "<member><InstanceId>{id}</InstanceId><AvailabilityZone>us-east-1a</AvailabilityZone>\
                 <LifecycleState>{state}</LifecycleState><HealthStatus>Healthy</HealthStatus>\
                 <ProtectedFromScaleIn>false</ProtectedFromScaleIn></member>"
            )
        })
        .collect();
    let tags: String = tags
        .iter()
        .map(|(k, v)| {
            format!(
                "<member><ResourceId>{name}</ResourceId><ResourceType>auto-scaling-group</ResourceType>\
                 <Key>{k}</Key><Value>{v}</Value><PropagateAtLaunch>true</PropagateAtLaunch></member>"
            )
        })
        .collect();
    let pols: String = policies
        .iter()
        .map(|p| format!("<member>{p}</member>"))
        .collect();
    format!(
        "<DescribeAutoScalingGroupsResponse xmlns=\"https://autoscaling.amazonaws.com/doc/2011-01-01/\">\
         <DescribeAutoScalingGroupsResult><AutoScalingGroups><member>\
         <AutoScalingGroupName>{name}</AutoScalingGroupName>\
         <MinSize>{min}</MinSize><MaxSize>{max}</MaxSize><DesiredCapacity>{desired}</DesiredCapacity>\
         <DefaultCooldown>300</DefaultCooldown><AvailabilityZones><member>us-east-1a</member></AvailabilityZones>\
         <HealthCheckType>EC2</HealthCheckType><CreatedTime>2024-01-01T00:00:00Z</CreatedTime>\
         <Instances>{inst}</Instances><Tags>{tags}</Tags><TerminationPolicies>{pols}</TerminationPolicies>\
         </member></AutoScalingGroups></DescribeAutoScalingGroupsResult>\
         <ResponseMetadata><RequestId>11111111-2222-3333-4444-555555555555</RequestId></ResponseMetadata>\
         </DescribeAutoScalingGroupsResponse>"
    )
}

/// An empty answer of an Auto Scaling action (`<ActionResponse>` with request id).
pub fn empty_xml(action: &str) -> String {
    format!(
        "<{action}Response xmlns=\"https://autoscaling.amazonaws.com/doc/2011-01-01/\">\
         <{action}Result/><ResponseMetadata><RequestId>11111111-2222-3333-4444-555555555555</RequestId>\
         </ResponseMetadata></{action}Response>"
    )
}

/// A `DescribeLifecycleHooks` answer with the executor's default hook.
pub fn hooks_xml(group: &str, hook: &str, timeout: u32) -> String {
    format!(
        "<DescribeLifecycleHooksResponse xmlns=\"https://autoscaling.amazonaws.com/doc/2011-01-01/\">\
         <DescribeLifecycleHooksResult><LifecycleHooks><member>\
         <LifecycleHookName>{hook}</LifecycleHookName><AutoScalingGroupName>{group}</AutoScalingGroupName>\
         <LifecycleTransition>autoscaling:EC2_INSTANCE_TERMINATING</LifecycleTransition>\
         <HeartbeatTimeout>{timeout}</HeartbeatTimeout><GlobalTimeout>{}</GlobalTimeout>\
         <DefaultResult>CONTINUE</DefaultResult></member></LifecycleHooks></DescribeLifecycleHooksResult>\
         <ResponseMetadata><RequestId>11111111-2222-3333-4444-555555555555</RequestId></ResponseMetadata>\
         </DescribeLifecycleHooksResponse>",
        timeout * 100
    )
}

/// An EC2 `DescribeInstances` answer (EC2's own XML dialect).
pub fn ec2_instances_xml(instances: &[(&str, &str, &str)]) -> String {
    let items: String = instances
        .iter()
        .map(|(id, dns, ip)| {
            format!(
                "<item><instanceId>{id}</instanceId><privateDnsName>{dns}</privateDnsName>\
                 <privateIpAddress>{ip}</privateIpAddress><instanceState><code>16</code><name>running</name></instanceState>\
                 <launchTime>2024-01-01T00:00:00.000Z</launchTime></item>"
            )
        })
        .collect();
    format!(
        "<DescribeInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
         <requestId>11111111-2222-3333-4444-555555555555</requestId><reservationSet><item>\
         <reservationId>r-1</reservationId><ownerId>123456789012</ownerId>\
         <instancesSet>{items}</instancesSet></item></reservationSet></DescribeInstancesResponse>"
    )
}

/// An SDK config pointing both clients at `url` with dummy static credentials and a short
/// retry schedule, as a test would have from `AWS_ENDPOINT_URL` and `AWS_ACCESS_KEY_ID`.
pub async fn sdk_config(url: &str, max_attempts: u32) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(max_attempts)
                .with_initial_backoff(Duration::from_millis(100)),
        )
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(10))
                .build(),
        )
        .load()
        .await
}

/// Collects `tracing` output of the current thread, for asserting warnings.
#[derive(Clone, Default)]
pub struct LogBuffer(pub Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }

    /// Installs a subscriber for this thread (tests run on a current-thread runtime).
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let sub = tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::set_default(sub)
    }
}

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Counts each action's occurrences in a list.
pub fn tally(actions: &[String]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for a in actions {
        *m.entry(a.clone()).or_insert(0) += 1;
    }
    m
}

/// The crate's EC2 client on a test's SDK config: how the tests make launch templates and
/// instances in moto, with the same Query API the executor speaks.
pub fn ec2(sdk: &aws_config::SdkConfig) -> autoscaler_aws_asg::client::ec2::Ec2Client {
    autoscaler_aws_asg::client::ec2::Ec2Client::new(sdk, Duration::from_secs(10))
}

/// `CreateLaunchTemplate` with an image and, when given, an instance type.
pub async fn create_launch_template(
    ec2: &autoscaler_aws_asg::client::ec2::Ec2Client,
    name: &str,
    image: &str,
    instance_type: Option<&str>,
) {
    let mut params = vec![
        ("LaunchTemplateName", name),
        ("LaunchTemplateData.ImageId", image),
    ];
    if let Some(t) = instance_type {
        params.push(("LaunchTemplateData.InstanceType", t));
    }
    ec2.call_xml("CreateLaunchTemplate", &params)
        .await
        .expect("CreateLaunchTemplate");
}

/// `RunInstances` of `count` instances tagged `tags` (a `TagSpecification` for instances);
/// their ids.
pub async fn run_instances(
    ec2: &autoscaler_aws_asg::client::ec2::Ec2Client,
    image: &str,
    count: u32,
    tags: &[(&str, &str)],
) -> Vec<String> {
    let mut params = vec![
        ("ImageId".to_string(), image.to_string()),
        ("MinCount".to_string(), count.to_string()),
        ("MaxCount".to_string(), count.to_string()),
    ];
    if !tags.is_empty() {
        params.push((
            "TagSpecification.1.ResourceType".to_string(),
            "instance".to_string(),
        ));
    }
    for (i, (k, v)) in tags.iter().enumerate() {
        params.push((
            format!("TagSpecification.1.Tag.{}.Key", i + 1),
            k.to_string(),
        ));
        params.push((
            format!("TagSpecification.1.Tag.{}.Value", i + 1),
            v.to_string(),
        ));
    }
    let doc = ec2
        .call_xml("RunInstances", &params)
        .await
        .expect("RunInstances");
    let ids: Vec<String> = doc
        .items("instancesSet")
        .filter_map(|i| i.text_at("instanceId").map(str::to_string))
        .collect();
    assert_eq!(ids.len(), count as usize, "RunInstances answer: {doc:?}");
    ids
}

/// `DescribeInstances` by id (`InstanceId.N`), decoded from the raw answer: id to
/// (private DNS name, tags).
pub async fn describe_by_id(
    ec2: &autoscaler_aws_asg::client::ec2::Ec2Client,
    ids: &[String],
) -> std::collections::BTreeMap<String, (String, std::collections::BTreeMap<String, String>)> {
    let params: Vec<(String, String)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (format!("InstanceId.{}", i + 1), id.clone()))
        .collect();
    let doc = ec2
        .call_xml("DescribeInstances", &params)
        .await
        .expect("DescribeInstances");
    doc.items("reservationSet")
        .flat_map(|r| r.items("instancesSet"))
        .map(|i| {
            let tags = i
                .items("tagSet")
                .map(|t| {
                    (
                        t.text_at("key").unwrap_or("").to_string(),
                        t.text_at("value").unwrap_or("").to_string(),
                    )
                })
                .collect();
            (
                i.text_at("instanceId").unwrap_or("").to_string(),
                (i.text_at("privateDnsName").unwrap_or("").to_string(), tags),
            )
        })
        .collect()
}

//! Raw-socket pieces for the hostile-input tests: a keep-alive HTTP/1.1
//! backend of the kind that answers first and reads the declared body
//! afterwards (as Tomcat- and Netty-style servers do), and helpers that
//! write bytes to the proxy exactly as given.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the raw backend saw.
#[derive(Default)]
pub struct Seen {
    /// Every request line it parsed, in order.
    pub lines: Mutex<Vec<String>>,
    /// Every request head, whole.
    pub heads: Mutex<Vec<String>>,
    pub open: AtomicUsize,
    pub peak_open: AtomicUsize,
    pub connections: AtomicUsize,
}

pub struct RawBackend {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

impl RawBackend {
    /// Answers every request at once with 200 and its request line as the
    /// body (404 for a WebSocket handshake; 200 after 100 ms for `/slow`),
    /// then reads the body the request declared, and keeps the connection.
    pub fn start() -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let seen = s.clone();
                std::thread::spawn(move || serve(stream, &seen));
            }
        });
        RawBackend { addr, seen, stop }
    }

    pub fn lines(&self) -> Vec<String> {
        self.seen.lines.lock().unwrap().clone()
    }

    pub fn heads(&self) -> Vec<String> {
        self.seen.heads.lock().unwrap().clone()
    }
}

/// Reads a chunked body (RFC 9112, 7.1): sizes in hex, each chunk and its
/// CRLF, then the trailer section up to its empty line.
fn read_chunked(reader: &mut BufReader<TcpStream>) -> std::io::Result<()> {
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("chunk size {line:?}")))?;
        if size == 0 {
            loop {
                let mut trailer = String::new();
                if reader.read_line(&mut trailer)? == 0 || trailer.trim_end().is_empty() {
                    return Ok(());
                }
            }
        }
        reader.read_exact(&mut vec![0u8; size + 2])?;
    }
}

/// A request head as the raw backends read it.
struct Head {
    line: String,
    text: String,
    length: usize,
    chunked: bool,
    upgrade: bool,
}

/// The next request head (empty lines before it skipped), or None at the
/// connection's end.
fn read_request_head(reader: &mut BufReader<TcpStream>) -> Option<Head> {
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if !line.trim_end().is_empty() {
            break;
        }
    }
    let mut head = Head {
        line: line.trim_end().to_string(),
        text: line,
        length: 0,
        chunked: false,
        upgrade: false,
    };
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            break;
        }
        head.text.push_str(&h);
        let t = h.trim_end();
        if t.is_empty() {
            break;
        }
        if let Some((name, value)) = t.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => head.length = value.trim().parse().unwrap_or(0),
                "transfer-encoding" => head.chunked = value.to_ascii_lowercase().contains("chunked"),
                "upgrade" => head.upgrade = true,
                _ => {}
            }
        }
    }
    Some(head)
}

fn serve(stream: TcpStream, seen: &Seen) {
    let open = seen.open.fetch_add(1, Ordering::SeqCst) + 1;
    seen.peak_open.fetch_max(open, Ordering::SeqCst);
    seen.connections.fetch_add(1, Ordering::SeqCst);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    while let Some(Head {
        line: request_line,
        text: head,
        length,
        chunked,
        upgrade,
    }) = read_request_head(&mut reader)
    {
        seen.lines.lock().unwrap().push(request_line.clone());
        seen.heads.lock().unwrap().push(head);
        if request_line.contains("/slow") {
            std::thread::sleep(Duration::from_millis(100));
        }
        let (status, body) = if upgrade {
            ("404 Not Found", "no WebSocket here".to_string())
        } else {
            ("200 OK", request_line.clone())
        };
        // Answer first, then read the body the request declared.
        let answer = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(answer.as_bytes()).is_err() {
            break;
        }
        // A chunked body is read to its end too: its last chunk ("0") must
        // not be taken for the next request line.
        let read = if chunked {
            read_chunked(&mut reader)
        } else {
            reader.read_exact(&mut vec![0u8; length])
        };
        if read.is_err() {
            break;
        }
    }
    seen.open.fetch_sub(1, Ordering::SeqCst);
}

/// A client connection that writes bytes as given.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.set_nodelay(true).unwrap();
        Raw { stream }
    }

    /// From another loopback source address (a second client).
    pub fn connect_from(source: &str, addr: SocketAddr) -> Raw {
        let socket = socket2_free_bind(source);
        let stream = socket.connect_to(addr);
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw { stream }
    }

    pub fn send(&mut self, bytes: &[u8]) -> &mut Self {
        self.stream.write_all(bytes).unwrap();
        self
    }

    /// Reads one response (head and a Content-Length body).
    pub fn response(&mut self) -> super::Response {
        let head = super::read_head(&mut self.stream);
        assert!(!head.is_empty(), "the proxy closed the connection without answering");
        let length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body).unwrap();
        let mut raw = head.into_bytes();
        raw.extend_from_slice(&body);
        super::parse_response(&raw)
    }

    /// True when the peer closes the connection (EOF or reset) within `within`.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        self.stream.set_read_timeout(Some(within)).unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return false;
                }
                Err(_) => return true,
            }
            if started.elapsed() > within {
                return false;
            }
        }
    }
}

/// A socket bound to a loopback source address before connecting.
struct Bound(std::os::fd::OwnedFd);

fn socket2_free_bind(source: &str) -> Bound {
    use std::os::fd::FromRawFd;
    let ip: std::net::Ipv4Addr = source.parse().unwrap();
    // SAFETY: socket and bind on a descriptor this function creates and owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket() failed");
        let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
        let addr = sockaddr(ip, 0);
        let rc = libc::bind(
            fd,
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        assert_eq!(rc, 0, "cannot bind {source}");
        Bound(owned)
    }
}

impl Bound {
    fn connect_to(self, addr: SocketAddr) -> TcpStream {
        use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
        let SocketAddr::V4(v4) = addr else { panic!("IPv4 only") };
        let target = sockaddr(*v4.ip(), v4.port());
        // SAFETY: connect on the descriptor owned by self.
        let rc = unsafe {
            libc::connect(
                self.0.as_raw_fd(),
                &target as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        assert_eq!(rc, 0, "cannot connect to {addr}");
        // SAFETY: the descriptor is a connected TCP socket, handed over once.
        unsafe { TcpStream::from_raw_fd(self.0.into_raw_fd()) }
    }
}

fn sockaddr(ip: std::net::Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    }
}

/// 200 with the request line as its body: a scripted backend's usual answer.
pub fn echo(line: &str) -> Vec<u8> {
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", line.len());
    [head.as_bytes(), line.as_bytes()].concat()
}

/// What a scripted backend does after writing its answer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Reads the body the request declared and waits for the next request.
    KeepAlive,
    /// Closes the connection without reading the request's body.
    Close,
    /// Keeps the connection open for 10 s without reading anything more.
    Stall,
}

/// A backend whose answers are written by the test, byte for byte, per
/// request line: for what a broken or hostile backend sends back.
pub struct ScriptedBackend {
    pub addr: SocketAddr,
    /// (connection number, request line) for every request, in order.
    requests: Arc<Mutex<Vec<(usize, String)>>>,
    stop: Arc<AtomicBool>,
}

type Script = dyn Fn(&str) -> (Vec<u8>, After) + Send + Sync;

impl ScriptedBackend {
    pub fn start(script: impl Fn(&str) -> (Vec<u8>, After) + Send + Sync + 'static) -> ScriptedBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let (r, st) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for (number, stream) in listener.incoming().enumerate() {
                if st.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (requests, script) = (r.clone(), script.clone());
                std::thread::spawn(move || answer_scripted(stream, number, &requests, &*script));
            }
        });
        ScriptedBackend { addr, requests, stop }
    }

    pub fn requests(&self) -> Vec<(usize, String)> {
        self.requests.lock().unwrap().clone()
    }

    /// The connection the request with this line arrived on.
    pub fn connection_of(&self, line_part: &str) -> usize {
        self.requests()
            .iter()
            .find(|(_, line)| line.contains(line_part))
            .unwrap_or_else(|| panic!("no request {line_part:?} reached the backend: {:?}", self.requests()))
            .0
    }
}

impl Drop for ScriptedBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn answer_scripted(stream: TcpStream, number: usize, requests: &Mutex<Vec<(usize, String)>>, script: &Script) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    while let Some(Head {
        line: request_line,
        length,
        ..
    }) = read_request_head(&mut reader)
    {
        requests.lock().unwrap().push((number, request_line.clone()));
        let (answer, after) = script(&request_line);
        if writer.write_all(&answer).is_err() || after == After::Close {
            let _ = writer.shutdown(std::net::Shutdown::Both);
            return;
        }
        if after == After::Stall {
            std::thread::sleep(Duration::from_secs(10));
            return;
        }
        if reader.read_exact(&mut vec![0u8; length]).is_err() {
            return;
        }
    }
}

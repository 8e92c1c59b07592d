//! `twill capture`: asks the agent for a capture and writes the pcap stream
//! it sends to a file or to standard output, whole records only, so that
//! the file is valid however the capture ends (count reached, Ctrl-C, the
//! reader of `-w -` gone). Ctrl-C (or SIGTERM) shuts down the sending half
//! of the connection: the agent ends the capture and still sends its
//! counts; a second one ends the stream at once.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{SigSet, Signal};
use twill::api::{self, CaptureEnd, CaptureTarget, Request, Response, DEFAULT_SOCKET};
use vswitch::capture::{pcap, MAX_SNAPLEN};

/// `twill capture`'s arguments (its help is the `Cmd::Capture` variant's).
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["port", "pod", "tunnel"])))]
pub struct CaptureArgs {
    /// A port, by its host-side name as `twill counters` shows it (a pod's
    /// `twpN`, or the host port's name). Both directions: frames as the TAP
    /// carries them, a pod's 64 KiB super-frames (TSO) as they are, like
    /// tcpdump on the TAP.
    #[arg(long, value_name = "NAME")]
    port: Option<String>,
    /// A pod's port, by its attachment id (as `twill pod list` shows it).
    #[arg(long, value_name = "ID")]
    pod: Option<String>,
    /// The tunnel: every datagram the node's tunnel sockets receive and
    /// send (one record per segment of a UDP_SEGMENT send), behind outer
    /// Ethernet, IPv4 and UDP headers made up from the socket's and the
    /// peer's addresses (zero MACs, no UDP checksum). Read VXLAN on
    /// flannel's port with `tshark -d udp.port==8472,vxlan`.
    #[arg(long)]
    tunnel: bool,
    /// Stop after N packets.
    #[arg(short = 'c', value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Bytes kept of each packet (tcpdump's default and maximum: 262144).
    #[arg(long, value_name = "N", default_value_t = MAX_SNAPLEN,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SNAPLEN)))]
    snaplen: u32,
    /// Where the pcap goes: a file, or `-` for standard output (e.g.
    /// `-w - | tshark -r -`).
    #[arg(short = 'w', value_name = "FILE|-")]
    write: PathBuf,
    /// The agent's API socket.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

/// Longest frame of the stream: a record header and a snaplen of data.
const FRAME_LIMIT: usize = pcap::RECORD_HEADER_LEN + MAX_SNAPLEN as usize;

/// Runs `twill capture`.
pub fn run(a: CaptureArgs) -> Result<()> {
    let target = match (a.port, a.pod, a.tunnel) {
        (Some(p), _, _) => CaptureTarget::Port(p),
        (_, Some(id), _) => CaptureTarget::Pod(id),
        _ => CaptureTarget::Tunnel,
    };
    // Ctrl-C and SIGTERM go to the thread that waits for them, which asks
    // the agent to end the capture (blocked before any thread starts).
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGINT);
    stop.add(Signal::SIGTERM);
    stop.thread_block().context("blocking SIGINT/SIGTERM")?;

    let s = UnixStream::connect(&a.socket)
        .with_context(|| format!("connecting to the agent at {}", a.socket.display()))?;
    let req = Request::Capture {
        target: target.clone(),
        count: a.count,
        snaplen: a.snaplen,
    };
    let mut line = serde_json::to_vec(&req)?;
    line.push(b'\n');
    (&s).write_all(&line).context("sending the request")?;
    let mut r = BufReader::new(&s);
    let mut text = String::new();
    r.read_line(&mut text)
        .context("reading the agent's answer")?;
    let resp: Response = serde_json::from_str(&text)
        .with_context(|| format!("reading the agent's answer {text:?}"))?;
    if !resp.ok {
        bail!("{}", resp.error.unwrap_or_else(|| "unknown error".into()));
    }

    let ender = s.try_clone().context("cloning the connection")?;
    std::thread::Builder::new()
        .name("twill-capture-stop".into())
        .spawn(move || {
            if stop.wait().is_ok() {
                let _ = ender.shutdown(Shutdown::Write);
            }
            if stop.wait().is_ok() {
                let _ = ender.shutdown(Shutdown::Both);
            }
        })?;

    let mut out = Output::open(&a.write)?;
    let what = match &target {
        CaptureTarget::Port(p) => format!("port {p}"),
        CaptureTarget::Pod(id) => format!("pod {id}"),
        CaptureTarget::Tunnel => "the tunnel".into(),
    };
    eprintln!("twill: capturing {what}, snaplen {} bytes", a.snaplen);

    let mut frame = Vec::new();
    let mut out_error = None;
    loop {
        match api::read_capture_frame(&mut r, &mut frame, FRAME_LIMIT) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                out.flush_quietly();
                bail!("the capture stream ended early: {e}");
            }
        }
        if out_error.is_some() {
            continue;
        }
        let written = out.w.write_all(&frame).and_then(|()| {
            // Nothing more waiting: let the reader of `-w -` see it now.
            if r.buffer().is_empty() {
                out.w.flush()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // Stop reading the pod; keep reading the stream to its end.
            let _ = s.shutdown(Shutdown::Write);
            out_error = Some(e);
        }
    }
    if out_error.is_none() {
        if let Err(e) = out.w.flush() {
            out_error = Some(e);
        }
    }
    text.clear();
    r.read_line(&mut text)
        .context("reading the capture's end")?;
    let end: CaptureEnd = serde_json::from_str(&text)
        .with_context(|| format!("reading the capture's end {text:?}"))?;
    eprintln!("{} packets captured", end.captured);
    eprintln!(
        "{} packets dropped (the capture's queue was full)",
        end.dropped
    );
    match out_error {
        // The reader of `-w -` went away (`| head`): an ordinary end.
        Some(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).with_context(|| format!("writing {}", a.write.display()))
        }
        _ => Ok(()),
    }
}

/// The file or standard output.
struct Output {
    w: Box<dyn Write>,
}

impl Output {
    fn open(path: &Path) -> Result<Output> {
        let w: Box<dyn Write> = if path == Path::new("-") {
            Box::new(BufWriter::new(std::io::stdout().lock()))
        } else {
            Box::new(BufWriter::new(
                File::create(path).with_context(|| format!("creating {}", path.display()))?,
            ))
        };
        Ok(Output { w })
    }

    fn flush_quietly(&mut self) {
        let _ = self.w.flush();
    }
}

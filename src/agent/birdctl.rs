//! BIRD's control socket (`bird -s PATH`), spoken directly: the text
//! protocol `birdc` speaks, so that the agent needs no `birdc` process per
//! question and parses what it asked for.
//!
//! Each reply line starts with a four-digit code and `-` (more follows) or
//! a space (the reply's last line); a line starting with a space continues
//! the previous code; a `+` line is an asynchronous message. Codes 0xxx
//! say done, 1xxx are table rows, 2xxx table headings, 8xxx and 9xxx
//! errors (BIRD's doc/reply_codes).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

/// One line of a reply: its code (carried over to continuation lines) and
/// its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The reply code.
    pub code: u16,
    /// The text after the code and its separator.
    pub text: String,
}

/// Runs `cmd` on the BIRD socket at `sock` and returns the reply's lines;
/// an error reply (8xxx, 9xxx) is an error carrying BIRD's words. Waits at
/// most `timeout` for each read.
pub fn command(sock: &Path, cmd: &str, timeout: Duration) -> Result<Vec<Line>> {
    let s = UnixStream::connect(sock)
        .with_context(|| format!("connecting to BIRD's control socket {}", sock.display()))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut r = BufReader::new(s.try_clone()?);
    // The greeting, "0001 BIRD 2.0.12 ready.".
    read_reply(&mut r).context("reading BIRD's greeting")?;
    (&s).write_all(format!("{cmd}\n").as_bytes())
        .with_context(|| format!("sending `{cmd}` to BIRD"))?;
    let lines = read_reply(&mut r).with_context(|| format!("reading BIRD's reply to `{cmd}`"))?;
    if let Some(last) = lines.last().filter(|l| l.code >= 8000) {
        let all: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        bail!(
            "BIRD refused `{cmd}` ({}): {}",
            last.code,
            all.join("; ").trim()
        );
    }
    Ok(lines)
}

fn read_reply(r: &mut impl BufRead) -> Result<Vec<Line>> {
    let mut out = Vec::new();
    let mut buf = String::new();
    loop {
        buf.clear();
        if r.read_line(&mut buf)? == 0 {
            bail!("BIRD closed the connection mid-reply");
        }
        match parse_line(
            buf.trim_end_matches('\n'),
            out.last().map(|l: &Line| l.code),
        ) {
            Some((line, last)) => {
                out.push(line);
                if last {
                    return Ok(out);
                }
            }
            None => continue,
        }
    }
}

/// One raw line: the line and whether it ends the reply; `None` for an
/// asynchronous message or a line that fits no rule.
fn parse_line(raw: &str, prev: Option<u16>) -> Option<(Line, bool)> {
    if let Some(rest) = raw.strip_prefix(' ') {
        let code = prev.unwrap_or(0);
        return Some((
            Line {
                code,
                text: rest.to_owned(),
            },
            false,
        ));
    }
    let b = raw.as_bytes();
    if b.len() < 5 || !b[..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code: u16 = raw[..4].parse().ok()?;
    let last = match b[4] {
        b' ' => true,
        b'-' => false,
        _ => return None,
    };
    Some((
        Line {
            code,
            text: raw[5..].to_owned(),
        },
        last,
    ))
}

/// Parses a whole reply text (for tests and fixtures).
#[cfg(test)]
pub fn parse_reply(text: &str) -> Vec<Line> {
    let mut out: Vec<Line> = Vec::new();
    for raw in text.lines() {
        if let Some((l, _)) = parse_line(raw, out.last().map(|l| l.code)) {
            out.push(l);
        }
    }
    out
}

/// A protocol of `show protocols all`, with what `twill bgp status` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Protocol {
    /// Its name in the configuration.
    pub name: String,
    /// `BGP`, `Kernel`, `Static` …
    pub proto: String,
    /// BIRD's protocol state: `up`, `start`, `stop`, `down`.
    pub state: String,
    /// When it last changed state (the config's `timeformat protocol`).
    pub since: String,
    /// The Info column: for BGP the session state and the last error.
    pub info: String,
    /// `BGP state:` (`Established`, `Active`, `Connect`, `Idle` …).
    pub bgp_state: Option<String>,
    /// `Neighbor address:`.
    pub neighbor: Option<String>,
    /// `Neighbor AS:`.
    pub neighbor_as: Option<u32>,
    /// Routes the channel imported, and exported.
    pub imported: Option<u64>,
    /// Routes exported.
    pub exported: Option<u64>,
    /// `Last error:`.
    pub last_error: Option<String>,
}

/// The protocols of a `show protocols all` reply (rows are code 1002,
/// their details code 1006).
pub fn protocols(lines: &[Line]) -> Vec<Protocol> {
    let mut out: Vec<Protocol> = Vec::new();
    for l in lines {
        match l.code {
            1002 => {
                let mut w = l.text.split_whitespace();
                let mut next = || w.next().unwrap_or("").to_owned();
                let (name, proto, _table, state, since) = (next(), next(), next(), next(), next());
                if name.is_empty() {
                    continue;
                }
                let info = l
                    .text
                    .split_whitespace()
                    .skip(5)
                    .collect::<Vec<_>>()
                    .join(" ");
                out.push(Protocol {
                    name,
                    proto,
                    state,
                    since,
                    info,
                    ..Protocol::default()
                });
            }
            1006 => {
                let Some(p) = out.last_mut() else { continue };
                let Some((k, v)) = l.text.split_once(':') else {
                    continue;
                };
                let v = v.trim();
                match k.trim() {
                    "BGP state" => p.bgp_state = Some(v.to_owned()),
                    "Neighbor address" => p.neighbor = Some(v.to_owned()),
                    "Neighbor AS" => p.neighbor_as = v.parse().ok(),
                    "Last error" => p.last_error = Some(v.to_owned()),
                    "Routes" if p.imported.is_none() => {
                        // "1 imported, 2 exported, 1 preferred"
                        for part in v.split(',') {
                            let mut it = part.split_whitespace();
                            let (n, what) = (it.next().and_then(|n| n.parse().ok()), it.next());
                            match what {
                                Some("imported") => p.imported = n,
                                Some("exported") => p.exported = n,
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `show protocols all` over the socket from BIRD 2.0.12 (a session up,
    /// one refused), trimmed.
    static SHOW_PROTOCOLS_ALL: &str = "\
2002-Name       Proto      Table      State  Since         Info
1002-device1    Device     ---        up     2026-12-05T10:03:10  
 
1002-twill_subnet Static     master4    up     2026-12-05T10:03:10  
1006-  Channel ipv4
     State:          UP
     Routes:         1 imported, 0 exported, 1 preferred
 
1002-router_192_168_130_254 BGP        ---        up     2026-12-05T10:03:13  Established   
1006-  Description:    router
   BGP state:          Established
     Neighbor address: 192.168.130.254
     Neighbor AS:      65000
     Local AS:         64512
   Channel ipv4
     State:          UP
     Routes:         3 imported, 1 exported, 3 preferred
     Route change stats:     received   rejected   filtered    ignored   accepted
       Import updates:              4          0          1          0          3
 
1002-mesh_192_168_130_2 BGP        ---        start  2026-12-05T10:03:10  Active        Socket: Connection refused
1006-  Description:    node-b
   BGP state:          Active
     Neighbor address: 192.168.130.2
     Neighbor AS:      64512
     Local AS:         64512
     Connect delay:    3.108/5
     Last error:       Socket: Connection refused
   Channel ipv4
     State:          DOWN
 
0000 
";

    #[test]
    fn lines_carry_codes_and_the_last_one_ends_the_reply() {
        assert_eq!(
            parse_line("0001 BIRD 2.0.12 ready.", None),
            Some((
                Line {
                    code: 1,
                    text: "BIRD 2.0.12 ready.".into()
                },
                true
            ))
        );
        let (l, last) = parse_line("   BGP state: Idle", Some(1006)).unwrap();
        assert_eq!((l.code, last), (1006, false));
        assert_eq!(l.text, "  BGP state: Idle");
        assert_eq!(parse_line("+0023 async", None), None);
        let (l, last) = parse_line("8002 /x: No such file or directory", None).unwrap();
        assert_eq!((l.code, last), (8002, true));
        assert!(!parse_line("1002-row", None).unwrap().1);
    }

    #[test]
    fn show_protocols_all_gives_each_sessions_state_routes_and_error() {
        let ps = protocols(&parse_reply(SHOW_PROTOCOLS_ALL));
        let names: Vec<&str> = ps.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "device1",
                "twill_subnet",
                "router_192_168_130_254",
                "mesh_192_168_130_2"
            ]
        );
        let up = &ps[2];
        assert_eq!(up.proto, "BGP");
        assert_eq!(up.state, "up");
        assert_eq!(up.since, "2026-12-05T10:03:13");
        assert_eq!(up.info, "Established");
        assert_eq!(up.bgp_state.as_deref(), Some("Established"));
        assert_eq!(up.neighbor.as_deref(), Some("192.168.130.254"));
        assert_eq!(up.neighbor_as, Some(65000));
        assert_eq!((up.imported, up.exported), (Some(3), Some(1)));
        assert_eq!(up.last_error, None);
        let down = &ps[3];
        assert_eq!(down.state, "start");
        assert_eq!(down.info, "Active Socket: Connection refused");
        assert_eq!(down.bgp_state.as_deref(), Some("Active"));
        assert_eq!(
            down.last_error.as_deref(),
            Some("Socket: Connection refused")
        );
        assert_eq!(down.imported, None);
        assert_eq!(ps[1].imported, Some(1));
    }
}

//! Peak resident memory of a process tree, sampled from `/proc` while a case runs: the
//! sum of `VmRSS` over a process and all its descendants (a peer run as N worker processes
//! counts all N), which a single process's `VmHWM` would not show.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const INTERVAL: Duration = Duration::from_millis(50);

/// Samples the tree under `root` until [`TreeMemory::stop`].
pub struct TreeMemory {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl TreeMemory {
    pub fn start(root: u32) -> TreeMemory {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            loop {
                peak = peak.max(tree_rss(root));
                if flag.load(Ordering::SeqCst) {
                    return peak;
                }
                std::thread::sleep(INTERVAL);
            }
        });
        TreeMemory {
            stop,
            thread: Some(thread),
        }
    }

    /// The highest summed RSS seen, bytes.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for TreeMemory {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// `(pid, parent pid)` of every process in `/proc`.
fn processes() -> Vec<(u32, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
            let after = &stat[stat.rfind(')')? + 1..];
            let ppid = after.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect()
}

/// Resident bytes of one process (`VmRSS`), 0 when it is gone.
pub fn rss(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:") * 1024
}

/// Peak resident bytes of one process over its life (`VmHWM`), 0 when it is gone.
pub fn peak_rss(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:") * 1024
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The summed RSS of `root` and its descendants, bytes.
pub fn tree_rss(root: u32) -> u64 {
    let all = processes();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    tree.into_iter().map(rss).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_children() {
        assert!(rss(std::process::id()) > 0);
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(rss(child.id()) > 0);
        assert!(tree_rss(std::process::id()) > rss(child.id()));
        let sampler = TreeMemory::start(std::process::id());
        std::thread::sleep(Duration::from_millis(120));
        assert!(sampler.stop() >= rss(child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

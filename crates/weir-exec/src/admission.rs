//! Admission: tasks start only while their resource requests fit the machine's capacity.

use weir_core::run::Requests;

/// What this machine offers to tasks.
#[derive(Debug, Clone)]
pub struct Capacity {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    /// GPU ids (`CUDA_VISIBLE_DEVICES` values).
    pub gpus: Vec<String>,
    /// Most processes at once, whatever their requests.
    pub max_tasks: usize,
}

impl Capacity {
    /// This machine: CPUs and memory from the OS, GPUs as given (ids, `CUDA_VISIBLE_DEVICES`
    /// values) or else from `nvidia-smi -L`.
    pub fn detect(gpus: Option<Vec<String>>) -> Capacity {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as u64;
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| {
                        l.split_whitespace()
                            .nth(1)
                            .and_then(|k| k.parse::<u64>().ok())
                    })
            })
            .map(|kb| kb * 1024)
            .unwrap_or(u64::MAX);
        let gpus = gpus.unwrap_or_else(detect_gpus);
        Capacity {
            cpu_millis: cpus * 1000,
            memory_bytes: mem,
            gpus,
            max_tasks: (cpus as usize * 16).max(32),
        }
    }
}

fn detect_gpus() -> Vec<String> {
    let Ok(out) = std::process::Command::new("nvidia-smi").arg("-L").output() else {
        return Vec::new();
    };
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("GPU "))
        .filter_map(|l| l[4..].split(':').next().map(|s| s.trim().to_string()))
        .collect()
}

/// Resources in use.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub gpus_used: Vec<String>,
    pub tasks: usize,
}

impl Ledger {
    /// Whether `r` could ever fit; `Err` names what is short.
    pub fn possible(cap: &Capacity, r: &Requests) -> Result<(), String> {
        if r.cpu_millis > cap.cpu_millis {
            return Err(format!(
                "requests {}m CPU but this machine has {}m",
                r.cpu_millis, cap.cpu_millis
            ));
        }
        if r.memory_bytes > cap.memory_bytes {
            return Err(format!(
                "requests {} bytes of memory but this machine has {}",
                r.memory_bytes, cap.memory_bytes
            ));
        }
        if r.gpus as usize > cap.gpus.len() {
            return Err(format!(
                "requests {} GPU(s) but this machine has {}",
                r.gpus,
                cap.gpus.len()
            ));
        }
        Ok(())
    }

    pub fn fits(&self, cap: &Capacity, r: &Requests) -> bool {
        self.tasks < cap.max_tasks
            && self.cpu_millis + r.cpu_millis <= cap.cpu_millis
            && self.memory_bytes + r.memory_bytes <= cap.memory_bytes
            && self.gpus_used.len() + r.gpus as usize <= cap.gpus.len()
    }

    /// Takes the resources; returns the GPUs assigned.
    pub fn take(&mut self, cap: &Capacity, r: &Requests) -> Vec<String> {
        self.tasks += 1;
        self.cpu_millis += r.cpu_millis;
        self.memory_bytes += r.memory_bytes;
        let free: Vec<String> = cap
            .gpus
            .iter()
            .filter(|g| !self.gpus_used.contains(g))
            .take(r.gpus as usize)
            .cloned()
            .collect();
        self.gpus_used.extend(free.iter().cloned());
        free
    }

    /// Takes the resources of a task already running (one found again after a restart), with
    /// the GPUs it was given, whether or not they fit.
    pub fn hold(&mut self, r: &Requests, gpus: &[String]) {
        self.tasks += 1;
        self.cpu_millis += r.cpu_millis;
        self.memory_bytes += r.memory_bytes;
        self.gpus_used.extend(gpus.iter().cloned());
    }

    pub fn give(&mut self, r: &Requests, gpus: &[String]) {
        self.tasks = self.tasks.saturating_sub(1);
        self.cpu_millis = self.cpu_millis.saturating_sub(r.cpu_millis);
        self.memory_bytes = self.memory_bytes.saturating_sub(r.memory_bytes);
        self.gpus_used.retain(|g| !gpus.contains(g));
    }
}

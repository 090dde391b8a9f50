//! The train bench's clocks: wall and CPU time of calls and of a step's phases, medians,
//! and the machine's load average.

use std::time::Instant;

/// Nanoseconds all threads of this process have spent on a CPU (Linux), or None.
pub fn cpu_ns() -> Option<u64> {
    let mut total = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(entry.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (phase, wall s, CPU s) of one step, in the step's order.
pub type Phases = Vec<(String, f64, Option<f64>)>;

/// Per phase, the median over `runs` (each a step's phases, in order; a phase run once per
/// chunk is summed over the chunks first).
pub fn median_phases(runs: Vec<Phases>) -> Phases {
    let merged: Vec<Phases> = runs
        .into_iter()
        .map(|cur| {
            let mut m: Phases = Vec::new();
            for (name, w, c) in cur {
                match m.iter_mut().find(|e| e.0 == name) {
                    Some(e) => {
                        e.1 += w;
                        e.2 = e.2.zip(c).map(|(a, b)| a + b);
                    }
                    None => m.push((name, w, c)),
                }
            }
            m
        })
        .collect();
    (merged[0].iter().enumerate())
        .map(|(j, (name, _, _))| {
            let w = median(merged.iter().map(|r| r[j].1).collect());
            let c: Option<Vec<f64>> = merged.iter().map(|r| r[j].2).collect();
            (name.clone(), w, c.map(median))
        })
        .collect()
}

/// A phase's end: its wall and CPU seconds since `t0`, then `t0` restarted.
pub fn lap(name: &str, t0: &mut (Instant, Option<u64>), cur: &mut Phases) {
    let c = cpu_ns();
    let cpu = t0.1.zip(c).map(|(a, b)| b.saturating_sub(a) as f64 * 1e-9);
    cur.push((name.to_string(), t0.0.elapsed().as_secs_f64(), cpu));
    *t0 = (Instant::now(), cpu_ns());
}

/// Median wall and CPU seconds of `runs` calls of `f` (after `warmup` untimed ones).
pub fn time(
    warmup: usize,
    runs: usize,
    mut f: impl FnMut() -> saeforge::Result<()>,
) -> saeforge::Result<(f64, Option<f64>)> {
    for _ in 0..warmup {
        f()?;
    }
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    for _ in 0..runs {
        let c0 = cpu_ns();
        let t0 = Instant::now();
        f()?;
        walls.push(t0.elapsed().as_secs_f64());
        if let (Some(a), Some(b)) = (c0, cpu_ns()) {
            cpus.push(b.saturating_sub(a) as f64 * 1e-9);
        }
    }
    let cpu = (cpus.len() == runs).then(|| median(cpus));
    Ok((median(walls), cpu))
}

/// [`time`] of two calls taken in turn (f, g, f, g, ...), so that both medians come from
/// the same stretch of a shared machine's load and their ratio means something.
pub type Timing = (f64, Option<f64>);
pub fn time_pair(
    warmup: usize,
    runs: usize,
    mut f: impl FnMut() -> saeforge::Result<()>,
    mut g: impl FnMut() -> saeforge::Result<()>,
) -> saeforge::Result<(Timing, Timing)> {
    for _ in 0..warmup {
        f()?;
        g()?;
    }
    let (mut tf, mut tg) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        tf.push(time(0, 1, &mut f)?);
        tg.push(time(0, 1, &mut g)?);
    }
    let med = |t: Vec<Timing>| -> Timing {
        let cpu: Option<Vec<f64>> = t.iter().map(|x| x.1).collect();
        (median(t.iter().map(|x| x.0).collect()), cpu.map(median))
    };
    Ok((med(tf), med(tg)))
}

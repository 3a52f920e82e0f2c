//! The report of a bench run: text, JSON (`--json`) and a self-contained HTML page with
//! throughput and latency over time (`--report out.html`, inline SVG, no scripts).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        LatencySummary {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// One second of the run.
#[derive(Debug, Clone, Serialize)]
pub struct TimeSlot {
    pub second: usize,
    pub requests: u64,
    pub ok: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    #[serde(skip)]
    hist: Option<Histogram<u64>>,
}

impl TimeSlot {
    pub fn new(second: usize) -> TimeSlot {
        TimeSlot {
            second,
            requests: 0,
            ok: 0,
            p50_us: 0,
            p99_us: 0,
            hist: Histogram::new_with_bounds(1, 100_000_000, 2).ok(),
        }
    }

    pub fn add(&mut self, us: u64, ok: bool) {
        self.requests += 1;
        self.ok += u64::from(ok);
        if let Some(h) = &mut self.hist {
            // Quantiles are read when slots are merged into the timeline, not per request
            // (that was ~5% of the generator's CPU, taken from the server it measures).
            let _ = h.record(us);
        }
    }

    pub fn merge(&mut self, o: &TimeSlot) {
        self.requests += o.requests;
        self.ok += o.ok;
        if let (Some(h), Some(oh)) = (&mut self.hist, &o.hist) {
            let _ = h.add(oh);
            self.p50_us = h.value_at_quantile(0.5);
            self.p99_us = h.value_at_quantile(0.99);
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Audit {
    pub ok: bool,
    pub skus_checked: usize,
    /// Units the run's acknowledged orders hold.
    pub units_acknowledged: i64,
    /// How much `reserved + sold` grew over the run.
    pub units_grown: i64,
    pub problems: Vec<String>,
}

impl Audit {
    pub fn skipped() -> Audit {
        Audit {
            ok: true,
            skus_checked: 0,
            units_acknowledged: 0,
            units_grown: 0,
            problems: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub target: String,
    pub load: String,
    pub seed: u64,
    pub elapsed_s: f64,
    /// Orders attempted (requests, for ping).
    pub orders: u64,
    pub requests: u64,
    pub requests_per_s: f64,
    pub ok: u64,
    /// 409 out_of_stock / limit_exceeded.
    pub sold_out: u64,
    pub errors: u64,
    /// All requests, microseconds.
    pub latency_us: LatencySummary,
    pub by_op: BTreeMap<String, LatencySummary>,
    /// Counts by `op status [problem type]`.
    pub by_outcome: BTreeMap<String, u64>,
    pub audit: Audit,
    pub timeline: Vec<TimeSlot>,
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

impl Report {
    pub fn print_text(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "ordo bench {} against {} ({}), seed {}",
            self.scenario, self.target, self.load, self.seed
        )?;
        writeln!(
            out,
            "  {} requests in {:.2} s: {:.0} requests/s; {} ok, {} sold out, {} errors",
            self.requests, self.elapsed_s, self.requests_per_s, self.ok, self.sold_out, self.errors
        )?;
        let l = &self.latency_us;
        writeln!(
            out,
            "  latency  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max)
        )?;
        if self.by_op.len() > 1 {
            for (op, l) in &self.by_op {
                writeln!(
                    out,
                    "    {op:<8} {:>8}  p50 {}  p99 {}  max {}",
                    l.count,
                    ms(l.p50),
                    ms(l.p99),
                    ms(l.max)
                )?;
            }
        }
        writeln!(out, "  outcomes")?;
        for (k, v) in &self.by_outcome {
            writeln!(out, "    {k:<40} {v:>10}")?;
        }
        if self.audit.skus_checked > 0 {
            writeln!(
                out,
                "  audit {} ({} SKUs; acknowledged orders hold {} units, reserved + sold grew by {})",
                if self.audit.ok { "PASSED" } else { "FAILED" },
                self.audit.skus_checked,
                self.audit.units_acknowledged,
                self.audit.units_grown
            )?;
        }
        for p in &self.audit.problems {
            writeln!(out, "    {p}")?;
        }
        Ok(())
    }

    pub fn html(&self) -> String {
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        };
        let mut h = String::new();
        let _ = write!(
            h,
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>ordo bench {}</title>\
             <style>body{{font:14px system-ui,sans-serif;margin:2em;max-width:60em}}\
             table{{border-collapse:collapse}}td,th{{padding:2px 10px;text-align:right;border-bottom:1px solid #ddd}}\
             th:first-child,td:first-child{{text-align:left}}.bad{{color:#b00}}.good{{color:#070}}</style></head><body>",
            esc(&self.scenario)
        );
        let _ = write!(
            h,
            "<h1>ordo bench {}</h1><p>{} — {} — seed {} — {:.2} s</p>",
            esc(&self.scenario),
            esc(&self.target),
            esc(&self.load),
            self.seed,
            self.elapsed_s
        );
        let l = &self.latency_us;
        let _ = write!(
            h,
            "<table><tr><th>requests</th><th>requests/s</th><th>ok</th><th>sold out</th><th>errors</th>\
             <th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>\
             <tr><td>{}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
            self.requests, self.requests_per_s, self.ok, self.sold_out, self.errors,
            ms(l.p50), ms(l.p90), ms(l.p99), ms(l.p999), ms(l.max)
        );
        let rps: Vec<f64> = self.timeline.iter().map(|t| t.requests as f64).collect();
        let p50: Vec<f64> = self
            .timeline
            .iter()
            .map(|t| t.p50_us as f64 / 1000.0)
            .collect();
        let p99: Vec<f64> = self
            .timeline
            .iter()
            .map(|t| t.p99_us as f64 / 1000.0)
            .collect();
        h.push_str("<h2>Throughput (requests per second)</h2>");
        h.push_str(&svg_chart(&[("requests/s", "#1f77b4", &rps)]));
        h.push_str("<h2>Latency over time (ms)</h2>");
        h.push_str(&svg_chart(&[
            ("p50", "#2ca02c", &p50),
            ("p99", "#d62728", &p99),
        ]));
        h.push_str("<h2>Outcomes</h2><table>");
        for (k, v) in &self.by_outcome {
            let _ = write!(h, "<tr><td>{}</td><td>{v}</td></tr>", esc(k));
        }
        h.push_str("</table>");
        if self.audit.skus_checked > 0 {
            let _ = write!(
                h,
                "<h2>Audit: <span class=\"{}\">{}</span></h2><p>{} SKUs; acknowledged orders hold {} units; reserved + sold grew by {}.</p><ul>",
                if self.audit.ok { "good" } else { "bad" },
                if self.audit.ok { "passed" } else { "FAILED" },
                self.audit.skus_checked,
                self.audit.units_acknowledged,
                self.audit.units_grown
            );
            for p in &self.audit.problems {
                let _ = write!(h, "<li class=\"bad\">{}</li>", esc(p));
            }
            h.push_str("</ul>");
        }
        h.push_str("</body></html>\n");
        h
    }
}

/// A line chart of per-second series as inline SVG.
fn svg_chart(series: &[(&str, &str, &Vec<f64>)]) -> String {
    let (w, ht, pad) = (720.0, 220.0, 40.0);
    let n = series.iter().map(|s| s.2.len()).max().unwrap_or(0).max(2);
    let max = series
        .iter()
        .flat_map(|s| s.2.iter().copied())
        .fold(0.0_f64, f64::max)
        .max(1e-9);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{ht}\" viewBox=\"0 0 {w} {ht}\">\
         <rect x=\"{pad}\" y=\"10\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>\
         <text x=\"2\" y=\"20\" font-size=\"11\">{max:.0}</text><text x=\"2\" y=\"{}\" font-size=\"11\">0</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\">{} s</text>",
        w - pad - 10.0,
        ht - pad - 10.0,
        ht - pad,
        w - pad - 30.0,
        ht - pad + 15.0,
        n - 1
    );
    for (i, (name, color, values)) in series.iter().enumerate() {
        let pts: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(x, v)| {
                let px = pad + (w - pad - 10.0) * x as f64 / (n - 1) as f64;
                let py = ht - pad - (ht - pad - 20.0) * v / max;
                format!("{px:.1},{py:.1}")
            })
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"{color}\">{name}</text>",
            pts.join(" "),
            pad + 10.0 + 90.0 * i as f64,
            ht - 8.0
        );
    }
    svg.push_str("</svg>");
    svg
}

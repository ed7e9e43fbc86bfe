//! The JSON floor: what one thread does when it only parses each post and
//! writes it back with one field added. Every throughput figure of the
//! benchmarks is given as a ratio to this loop, run on the same corpus, on the
//! same machine, in the same run.
//!
//! Per line: `serde_json::from_slice::<Value>`, insert a small `traptor`
//! object, `serde_json::to_writer` into a 1 MiB buffered file, newline.
//!
//! ```sh
//! cargo run --release -p traptor-host --example floor -- CORPUS.jsonl [OUT]
//! ```
//! Prints one line: `floor: N posts in S s = P posts/s (M MiB/s in)`.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::time::Instant;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(corpus) = args.next() else {
        eprintln!("usage: floor CORPUS.jsonl [OUT (default /dev/null)]");
        std::process::exit(2);
    };
    let out = args.next().unwrap_or_else(|| "/dev/null".into());
    let mut input = BufReader::with_capacity(1 << 20, std::fs::File::open(&corpus)?);
    let mut output = BufWriter::with_capacity(1 << 20, std::fs::File::create(&out)?);
    let traptor = serde_json::json!({"id_str": 0, "type": "track", "rule_tag": "Not Found"});
    let (mut line, mut posts, mut bytes, mut bad) = (Vec::new(), 0u64, 0u64, 0u64);
    let started = Instant::now();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        bytes += line.len() as u64;
        match serde_json::from_slice::<serde_json::Value>(&line) {
            Ok(serde_json::Value::Object(mut post)) => {
                post.insert("traptor".into(), traptor.clone());
                serde_json::to_writer(&mut output, &post)?;
                output.write_all(b"\n")?;
                posts += 1;
            }
            _ => bad += 1,
        }
    }
    output.flush()?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "floor: {posts} posts in {secs:.2} s = {:.0} posts/s ({:.1} MiB/s in){}",
        posts as f64 / secs,
        bytes as f64 / secs / 1048576.0,
        if bad > 0 { format!(", {bad} lines not a JSON object") } else { String::new() }
    );
    Ok(())
}

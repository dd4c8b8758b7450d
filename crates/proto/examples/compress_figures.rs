//! Bytes on the wire and CPU per algorithm for typical 1–4 KB JSON-ish chat messages, as
//! recorded in docs/security.md "Compression":
//! `cargo run --release -p longlink-proto --example compress_figures`.

use std::time::Instant;

use longlink_proto::Compression;

/// An order-like JSON document of about `n` bytes (repetitive keys, varied values).
fn json_message(n: usize) -> Vec<u8> {
    let mut out = String::from("{\"order\":\"A-20261207-7781\",\"items\":[");
    let mut i = 0usize;
    while out.len() < n {
        out.push_str(&format!(
            "{{\"id\":{i},\"sku\":\"SKU-{:05}\",\"name\":\"item number {i}\",\"qty\":{},\"price\":\"{}.99\"}},",
            i * 37 % 10_000,
            i % 7 + 1,
            i % 50 + 1
        ));
        i += 1;
    }
    out.push_str("{}]}");
    out.into_bytes()
}

fn main() {
    const ROUNDS: u32 = 20_000;
    println!("| body | algorithm | bytes on the wire | ratio | compress µs | decompress µs |");
    println!("|---:|---|---:|---:|---:|---:|");
    for size in [1024, 2048, 4096] {
        let input = json_message(size);
        for algorithm in Compression::ALL {
            let packed = algorithm.compress(&input).expect("compress");
            let started = Instant::now();
            for _ in 0..ROUNDS {
                std::hint::black_box(algorithm.compress(std::hint::black_box(&input)).ok());
            }
            let compress = started.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS);
            let started = Instant::now();
            for _ in 0..ROUNDS {
                std::hint::black_box(
                    algorithm
                        .decompress(std::hint::black_box(&packed), 64 * 1024)
                        .ok(),
                );
            }
            let decompress = started.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS);
            println!(
                "| {} | {algorithm} | {} | {:.2} | {compress:.1} | {decompress:.1} |",
                input.len(),
                packed.len(),
                input.len() as f64 / packed.len() as f64
            );
        }
        // Reference: zstd's default level 3, against the level 1 used on the wire.
        let packed = zstd::bulk::compress(&input, 3).expect("compress");
        let started = Instant::now();
        for _ in 0..ROUNDS {
            std::hint::black_box(zstd::bulk::compress(std::hint::black_box(&input), 3).ok());
        }
        let compress = started.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS);
        println!(
            "| {} | zstd level 3 (reference) | {} | {:.2} | {compress:.1} | — |",
            input.len(),
            packed.len(),
            input.len() as f64 / packed.len() as f64
        );
    }
}

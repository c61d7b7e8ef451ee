//! Storage engine benchmark: bytes stored and time per change pattern, for
//! each encoding and for the default (automatic) choice, against storing a
//! full copy per version. `cargo bench -p diffkeeper-store` prints the
//! tables; docs/recording-format.md quotes them.
//!
//! Data is pseudo-random (incompressible), the worst case for every engine;
//! real logs and configs compress further.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use diffkeeper_store::{
    Actor, EncodingPolicy, ExportOptions, Moment, Op, PatchEngine, RecPath, Recorder,
    RecorderOptions, Recording, RecordingMeta,
};
use rand::{Rng, RngCore, SeedableRng};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

fn main() {
    // `cargo bench` passes `--bench`; any other argument selects cases.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let work =
        tempfile::tempdir_in(std::env::var_os("BENCH_DIR").unwrap_or_else(|| "/var/tmp".into()))
            .unwrap();

    println!("# diffkeeper-store engine benchmark (incompressible data)\n");
    println!("chosen: how many versions were stored (w)hole, as (a)ppends, (z)std or (b)sdiff patches, (c)hunked\n");
    println!("| case | engine | chosen | versions | changed/version | stored | file on disk | stored ÷ changed | full copies ÷ stored | ingest MB/s |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    if run("config") {
        let case = Case::config_edits();
        for (name, policy) in engines(true) {
            case.report(name, &policy, work.path());
        }
    }
    if run("log") {
        let case = Case::log_appends();
        for (name, policy) in engines(false) {
            case.report(name, &policy, work.path());
        }
    }
    if run("inplace") {
        let case = Case::in_place_edits();
        for (name, policy) in engines(false) {
            case.report(name, &policy, work.path());
        }
    }
    if run("database") {
        database(work.path());
    }
    if run("export") {
        export(work.path());
    }
}

/// The engines compared. bsdiff is O(n log n) with ~17n memory: it only
/// runs with few versions on the 1 MiB cases (see `Case::versions_for`).
fn engines(small: bool) -> Vec<(&'static str, EncodingPolicy)> {
    let patch = |engine| EncodingPolicy {
        append: false,
        chunked_from: u64::MAX,
        patch_engines: vec![engine],
        patch_up_to: u64::MAX,
        max_patch_read_bytes: u64::MAX,
        max_patch_chain: 16,
        ..EncodingPolicy::default()
    };
    let mut list = vec![
        ("auto (default)", EncodingPolicy::default()),
        ("whole, zstd", EncodingPolicy::whole_only()),
        (
            "tail append",
            EncodingPolicy {
                append: true,
                ..EncodingPolicy::whole_only()
            }
            .with_chain(1024, 0),
        ),
        ("zstd --patch-from", patch(PatchEngine::ZstdPrefix)),
        ("bsdiff (qbsdiff)", patch(PatchEngine::Bsdiff)),
        (
            "FastCDC chunks",
            EncodingPolicy {
                chunked_from: 0,
                ..EncodingPolicy::whole_only()
            },
        ),
    ];
    if small {
        list.retain(|(n, _)| *n != "FastCDC chunks");
    }
    list
}

trait WithChain {
    fn with_chain(self, append: u16, patch: u16) -> Self;
}

impl WithChain for EncodingPolicy {
    fn with_chain(mut self, append: u16, patch: u16) -> Self {
        self.max_append_chain = append;
        self.max_patch_chain = patch;
        self
    }
}

struct Case {
    name: &'static str,
    initial: Vec<u8>,
    versions: usize,
    change: fn(&mut Vec<u8>, &mut rand::rngs::StdRng) -> usize,
}

impl Case {
    fn config_edits() -> Case {
        Case {
            name: "10 B edit, 4 KiB config",
            initial: noise(1, 4 * KIB),
            versions: 1000,
            change: |data, rng| {
                let at = rng.random_range(0..data.len() - 10);
                rng.fill_bytes(&mut data[at..at + 10]);
                10
            },
        }
    }

    fn log_appends() -> Case {
        Case {
            name: "4 KiB appends, 1 MiB log",
            initial: noise(2, MIB),
            versions: 1000,
            change: |data, rng| {
                let mut tail = vec![0; 4 * KIB];
                rng.fill_bytes(&mut tail);
                data.extend_from_slice(&tail);
                4 * KIB
            },
        }
    }

    fn in_place_edits() -> Case {
        Case {
            name: "4 KiB in-place edit, 1 MiB file",
            initial: noise(3, MIB),
            versions: 1000,
            change: |data, rng| {
                let at = rng.random_range(0..data.len() - 4 * KIB);
                rng.fill_bytes(&mut data[at..at + 4 * KIB]);
                4 * KIB
            },
        }
    }

    fn versions_for(&self, engine: &str) -> usize {
        if engine.starts_with("bsdiff") && self.initial.len() >= MIB {
            30
        } else {
            self.versions
        }
    }

    fn report(&self, engine: &str, policy: &EncodingPolicy, dir: &Path) {
        let versions = self.versions_for(engine);
        let file = dir.join(format!("{}-{engine}.redb", self.name).replace([' ', '/', ','], "_"));
        let mut rec = recorder(&file, policy.clone());
        let path = RecPath::new("/data/file").unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let mut data = self.initial.clone();
        store(&mut rec, &path, &data, 0);
        let before = rec.stats().bytes_stored;
        let (mut changed, mut full_copies, mut ingested) = (0, 0, 0);
        let mut elapsed = Duration::ZERO;
        for v in 1..=versions {
            changed += (self.change)(&mut data, &mut rng);
            full_copies += data.len();
            let start = Instant::now();
            store(&mut rec, &path, &data, v as u64);
            elapsed += start.elapsed();
            ingested += data.len();
        }
        let stored = rec.stats().bytes_stored - before;
        let st = rec.stats().clone();
        let chosen = format!(
            "{}w {}a {}z {}b {}c",
            st.whole, st.appends, st.patches_zstd, st.patches_bsdiff, st.chunked
        );
        rec.finish(None).unwrap();
        let file_size = std::fs::metadata(&file).unwrap().len();
        // Reading the newest version back must give the same bytes.
        let recording = Recording::open(&file).unwrap();
        let latest = recording.cat(&path, &Moment::latest()).unwrap();
        assert!(latest == data, "{engine}: last version differs");
        println!(
            "| {} | {engine} | {chosen} | {versions} | {} | {} | {} | {:.2} | {:.0}× | {:.0} |",
            self.name,
            bytes(changed as u64 / versions as u64),
            bytes(stored),
            bytes(file_size),
            stored as f64 / changed as f64,
            full_copies as f64 / stored as f64,
            ingested as f64 / 1e6 / elapsed.as_secs_f64(),
        );
        std::fs::remove_file(&file).unwrap();
    }
}

/// 256 MiB, 64 scattered 4 KiB pages per version, 50 versions.
fn database(dir: &Path) {
    const SIZE: usize = 256 * MIB;
    const VERSIONS: usize = 50;
    const PAGES: usize = 64;
    let file = dir.join("database.redb");
    let mut rec = recorder(&file, EncodingPolicy::default());
    let path = RecPath::new("/var/lib/db/data.db").unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut data = noise(9, SIZE);
    let start = Instant::now();
    store(&mut rec, &path, &data, 0);
    let first = start.elapsed();
    let first_stored = rec.stats().bytes_stored;
    let mut elapsed = Duration::ZERO;
    for v in 1..=VERSIONS {
        for _ in 0..PAGES {
            let page = rng.random_range(0..SIZE / (4 * KIB));
            rng.fill_bytes(&mut data[page * 4 * KIB..(page + 1) * 4 * KIB]);
        }
        let start = Instant::now();
        store(&mut rec, &path, &data, v as u64);
        elapsed += start.elapsed();
    }
    let stored = rec.stats().bytes_stored - first_stored;
    rec.finish(None).unwrap();
    let file_size = std::fs::metadata(&file).unwrap().len();

    let plain = dir.join("plain.bin");
    std::fs::write(&plain, &data).unwrap();
    let recording = Recording::open(&file).unwrap();
    // Interleaved, so both see the same background load.
    let (mut plain_times, mut recorded_times) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        plain_times.push(median(1, || {
            std::hint::black_box(std::fs::read(&plain).unwrap());
        }));
        recorded_times.push(median(1, || {
            let bytes = recording.cat(&path, &Moment::latest()).unwrap();
            assert_eq!(bytes.len(), SIZE);
        }));
    }
    plain_times.sort();
    recorded_times.sort();
    let (read_plain, read_recorded) = (plain_times[3], recorded_times[3]);
    let changed = (VERSIONS * PAGES * 4 * KIB) as u64;
    println!("\n# 256 MiB file, {PAGES} scattered 4 KiB pages changed per version, {VERSIONS} versions\n");
    println!("| metric | value |");
    println!("|---|---|");
    println!(
        "| first version stored | {} in {:.2} s |",
        bytes(first_stored),
        first.as_secs_f64()
    );
    println!(
        "| later versions stored (total) | {} ({} per version) |",
        bytes(stored),
        bytes(stored / VERSIONS as u64)
    );
    println!(
        "| stored ÷ changed | {:.2} |",
        stored as f64 / changed as f64
    );
    println!("| recording file on disk | {} |", bytes(file_size));
    println!(
        "| full copies would store | {} |",
        bytes((SIZE * VERSIONS) as u64)
    );
    println!(
        "| ingest per version | {:.0} ms ({:.0} MB/s of file content) |",
        elapsed.as_secs_f64() * 1e3 / VERSIONS as f64,
        (SIZE * VERSIONS) as f64 / 1e6 / elapsed.as_secs_f64()
    );
    println!(
        "| read last version | {:.0} ms |",
        read_recorded.as_secs_f64() * 1e3
    );
    println!(
        "| plain read of the same file | {:.0} ms |",
        read_plain.as_secs_f64() * 1e3
    );
    println!(
        "| read ratio (goal ≤ 2) | {:.2} |",
        read_recorded.as_secs_f64() / read_plain.as_secs_f64()
    );
    std::fs::remove_file(&file).unwrap();
    std::fs::remove_file(&plain).unwrap();
}

/// Export of 10,000 files / 1 GiB against `cp -a` of the same tree.
fn export(dir: &Path) {
    const FILES: usize = 10_000;
    const TOTAL: usize = 1024 * MIB;
    let source = dir.join("tree");
    let file = dir.join("export.redb");
    let mut rec = recorder(&file, EncodingPolicy::default());
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut ingest = Duration::ZERO;
    for i in 0..FILES {
        let rel = format!("d{}/e{}/f{i}", i % 20, i % 7);
        let size = rng.random_range(TOTAL / FILES / 2..TOTAL / FILES * 3 / 2);
        let data = noise(i as u64 + 100, size);
        let host = source.join(&rel);
        std::fs::create_dir_all(host.parent().unwrap()).unwrap();
        std::fs::write(&host, &data).unwrap();
        let start = Instant::now();
        store(
            &mut rec,
            &RecPath::new(format!("/{rel}")).unwrap(),
            &data,
            i as u64,
        );
        ingest += start.elapsed();
    }
    rec.finish(None).unwrap();
    let recording = Recording::open(&file).unwrap();
    let mut n = 0;
    let exported = median(3, || {
        n += 1;
        let out = dir.join(format!("export-{n}"));
        recording
            .export(&Moment::latest(), &out, &ExportOptions::default())
            .unwrap();
        std::fs::remove_dir_all(&out).unwrap();
    });
    let copied = median(3, || {
        n += 1;
        let out = dir.join(format!("copy-{n}"));
        let ok = Command::new("cp")
            .arg("-a")
            .arg(&source)
            .arg(&out)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        std::fs::remove_dir_all(&out).unwrap();
    });
    let size = std::fs::metadata(&file).unwrap().len();
    println!("\n# export of {FILES} files / 1 GiB vs `cp -a`\n");
    println!("| metric | value |");
    println!("|---|---|");
    println!(
        "| ingest | {:.0} MB/s |",
        TOTAL as f64 / 1e6 / ingest.as_secs_f64()
    );
    println!("| recording file size | {} |", bytes(size));
    println!("| diffkeeper export | {:.2} s |", exported.as_secs_f64());
    println!("| cp -a | {:.2} s |", copied.as_secs_f64());
    println!(
        "| ratio (goal ≤ 1.5) | {:.2} |",
        exported.as_secs_f64() / copied.as_secs_f64()
    );
    std::fs::remove_dir_all(&source).unwrap();
    std::fs::remove_file(&file).unwrap();
}

fn recorder(file: &Path, encoding: EncodingPolicy) -> Recorder {
    let options = RecorderOptions {
        encoding,
        ..RecorderOptions::default()
    };
    Recorder::create(file, &RecordingMeta::default(), options).unwrap()
}

fn store(rec: &mut Recorder, path: &RecPath, data: &[u8], t: u64) {
    let content = rec.store_content(path, data).unwrap();
    let actor = Actor::Process {
        pid: 1,
        tid: 1,
        comm: "bench".into(),
    };
    rec.record(
        t,
        actor,
        Op::Write {
            path: path.clone(),
            content,
        },
    )
    .unwrap();
}

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 10 * MIB as u64 => format!("{:.1} MiB", n as f64 / MIB as f64),
        n if n >= 10 * KIB as u64 => format!("{:.1} KiB", n as f64 / KIB as f64),
        n => format!("{n} B"),
    }
}

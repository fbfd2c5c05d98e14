//! The golden replay: type1's own transcript of the device-free corpus (recorded in the VM by
//! record-golden.sh) must come out of the shim's core over the fake backend, record for record.
//! So no host test can hold the core to a value type1 does not give, and the fake backend is
//! held to the kernel's answers wherever the core depends on them.

use std::path::Path;

use vfio_shim::translator::Config;
use vfio_shim_explorer::corpus;
use vfio_shim_explorer::executor::{Explorer, Platform};
use vfio_shim_explorer::replay::{vm_iommu, CoreCalls};

fn golden(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"))
}

fn platform_env() -> (Platform, Vec<(String, Option<String>)>, Config) {
    let text = golden("platform.env");
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .unwrap_or_else(|| panic!("platform.env has no {k}"))
            .to_string()
    };
    let platform = Platform {
        edu: get("EDU"),
        igb: get("IGB"),
        pair_edu: get("PAIR_EDU"),
        pair_rng: get("PAIR_RNG"),
        edu_group: get("EDU_GROUP").parse().unwrap(),
        igb_group: get("IGB_GROUP").parse().unwrap(),
        pair_group: get("PAIR_GROUP").parse().unwrap(),
        noiommu: false,
    };
    // "0000:01:00.0=none,0000:02:01.0=vfio-pci,...": the pair's group and its drivers.
    let members = get("PAIR_MEMBERS")
        .split(',')
        .map(|m| {
            let (name, driver) = m.split_once('=').expect("PAIR_MEMBERS: name=driver");
            (name.to_string(), Some(driver.to_string()).filter(|d| d != "none"))
        })
        .collect();
    (platform, members, Config { dma_entry_limit: get("DMA_ENTRY_LIMIT").parse().unwrap() })
}

#[test]
fn the_core_over_the_fake_backend_answers_as_type1_did() {
    let seqs = corpus::parse(&golden("corpus.seqs")).expect("corpus");
    let type1 = golden("type1.out");
    let (platform, members, config) = platform_env();
    let calls = CoreCalls::new(&platform, &members, vm_iommu(), config);
    let mut ex = Explorer::new(Vec::new(), calls, platform, false);
    for (name, ops) in &seqs {
        ex.run_sequence(name, ops);
    }
    let ops = ex.ops;
    let mut out = String::from_utf8(ex.into_inner()).expect("utf-8 transcript");
    out += "END status=ok\n";

    let want: Vec<&str> = type1.lines().collect();
    let got: Vec<&str> = out.lines().collect();
    let mut bad = Vec::new();
    for i in 0..want.len().max(got.len()) {
        let (w, g) = (want.get(i).copied(), got.get(i).copied());
        if w != g {
            bad.push(format!("  type1: {}\n  core : {}", w.unwrap_or("(none)"), g.unwrap_or("(none)")));
            // Records after a first difference in a sequence are shifted: show the first few only.
            if bad.len() == 10 {
                break;
            }
        }
    }
    assert!(
        bad.is_empty(),
        "the core over the fake backend differs from type1's transcript ({} sequences, {ops} records):\n{}",
        seqs.len(),
        bad.join("\n")
    );
    assert!(ops > 5000, "the corpus ran ({ops} records)");
}

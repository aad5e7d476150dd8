//! The command line end to end.

use crate::legionc;

#[test]
fn verify_runs_a_split_plan_against_tract() {
    for fusion in ["layerwise", "blocks", "one"] {
        let out = legionc()
            .args(["verify", "resnet18-tiny", "--boards", "3", "--speeds", "1,2,0.5", "--fusion", fusion])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{fusion}: {}{}", text, String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("verified"), "{text}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let out = legionc().args(["verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = legionc().args(["verify", "vgg16-tiny", "--boards", "2", "--speeds", "1,2,3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--speeds gives 3 values for 2 boards"));
}

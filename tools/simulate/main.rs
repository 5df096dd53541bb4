//! The labelled-traffic simulator for the anomaly detectors (issue 16). Built only with `--features
//! sim-clock`.

fn main() {
    eprintln!("portcullis-simulate: not implemented yet");
    std::process::exit(2);
}

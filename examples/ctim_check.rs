//! Checks a relay answer read from standard input against CTIM
//! (`ctr_relay::ctim::check`), for the scripts: `ctim_check < answer.json`,
//! or `ctim_check --sighting < sighting.json` for one CTIM sighting standing
//! alone (a Threat Bus sighting's context). Prints each problem and exits 1
//! when there is one; prints what it checked and exits 0 when there is none.

use std::io::Read;
use std::process::ExitCode;

use ctr_relay::ctim::check::{answer_problems, sighting_problems};
use serde_json::Value;

fn main() -> ExitCode {
    let sighting = std::env::args().any(|arg| arg == "--sighting");
    let mut text = String::new();
    if let Err(error) = std::io::stdin().read_to_string(&mut text) {
        eprintln!("ctim_check: cannot read standard input: {error}");
        return ExitCode::FAILURE;
    }
    let value: Value = match serde_json::from_str(&text) {
        Ok(value) => value,
        Err(error) => {
            eprintln!("ctim_check: not JSON: {error}");
            return ExitCode::FAILURE;
        }
    };
    let problems = match sighting {
        true => sighting_problems(&value),
        false => answer_problems(&value),
    };
    if problems.is_empty() {
        let what = if sighting { "sighting" } else { "answer" };
        println!("ctim_check: the {what} is valid CTIM");
        return ExitCode::SUCCESS;
    }
    for problem in &problems {
        eprintln!("ctim_check: {problem}");
    }
    ExitCode::FAILURE
}

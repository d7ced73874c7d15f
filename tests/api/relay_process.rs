//! The relay binary as a child process, for the tests that need a process:
//! its output collected as it runs, signals, exit codes.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::helpers::{closed_port, test_client};

pub const BINARY: &str = env!("CARGO_BIN_EXE_ctr-relay");

/// A relay process on a free port, its output collected as it runs.
pub struct Relay {
    child: Child,
    pub port: u16,
    pub output: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Relay {
    pub async fn start(envs: &[(&str, String)]) -> Relay {
        let port = closed_port();
        let mut command = Command::new(BINARY);
        command
            .env_clear()
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .envs(envs.iter().map(|(name, value)| (*name, value.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the relay starts");
        let output = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        let streams: Vec<Box<dyn Read + Send>> = vec![
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for mut stream in streams {
            let output = output.clone();
            readers.push(std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    output
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buffer[..n]));
                }
            }));
        }
        let relay = Relay {
            child,
            port,
            output,
            readers,
        };
        relay.wait_until_ready().await;
        relay
    }

    pub fn url(&self, route: &str) -> String {
        format!("http://127.0.0.1:{}{route}", self.port)
    }

    pub async fn wait_until_ready(&self) {
        let client = test_client();
        for _ in 0..200 {
            let ready = client
                .get(self.url("/watchdog"))
                .header("Health-Check", "ready")
                .send()
                .await
                .is_ok();
            if ready {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the relay did not start:\n{}", self.output.lock().unwrap());
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit (at most 20 s) and returns its exit code
    /// and everything it wrote.
    pub async fn wait(mut self) -> (Option<i32>, String) {
        for _ in 0..400 {
            if let Some(status) = self.child.try_wait().unwrap() {
                for reader in self.readers.drain(..) {
                    reader.join().unwrap();
                }
                let output = self.output.lock().unwrap().clone();
                return (status.code(), output);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        panic!("the relay did not exit:\n{}", self.output.lock().unwrap());
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

pub fn run(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let output = Command::new(BINARY)
        .args(args)
        .env_clear()
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

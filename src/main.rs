use std::process::ExitCode;

use clap::Parser;

use ctr_relay::cli::{Cli, Command, JwtArgs, mint};
use ctr_relay::config::Settings;
use ctr_relay::secret::Secret;
use ctr_relay::startup::Application;
use ctr_relay::telemetry;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(),
        Command::Jwt(args) => jwt(&args),
    }
}

fn serve() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("ctr-relay: {error}");
            return ExitCode::FAILURE;
        }
    };
    telemetry::init(&settings.log);
    let result = actix_web::rt::System::new().block_on(async move {
        let application = Application::build(settings).await?;
        tracing::info!(
            port = application.port(),
            version = env!("CARGO_PKG_VERSION"),
            "listening"
        );
        application.run().await?;
        Ok::<_, ctr_relay::startup::StartupError>(())
    });
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "the relay stopped on an error");
            eprintln!("ctr-relay: {error}");
            ExitCode::FAILURE
        }
    }
}

fn jwt(args: &JwtArgs) -> ExitCode {
    let secret_key = std::env::var("SECRET_KEY")
        .ok()
        .filter(|key| !key.is_empty())
        .map(Secret::new);
    match mint(args, secret_key) {
        Ok(minted) => {
            print!("{}", minted.render());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("ctr-relay: {error}");
            ExitCode::FAILURE
        }
    }
}

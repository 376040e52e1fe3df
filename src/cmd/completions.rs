//! `flowgate completions SHELL` and `flowgate man`: what users of a CLI
//! expect beside `--help`, generated from the same clap types.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::{Cli, print_bytes};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    flowgate completions bash > ~/.local/share/bash-completion/completions/flowgate\n  \
    flowgate completions zsh > \"${fpath[1]}/_flowgate\"\n  \
    flowgate completions fish > ~/.config/fish/completions/flowgate.fish")]
pub struct CompletionsArgs {
    /// The shell to complete in.
    pub shell: Shell,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  flowgate man | man -l -\n  flowgate man > /usr/local/share/man/man1/flowgate.1")]
pub struct ManArgs {}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "flowgate", &mut out);
    print_bytes(&out)?;
    Ok(())
}

pub fn man(_args: ManArgs) -> anyhow::Result<()> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    print_bytes(&out)?;
    Ok(())
}

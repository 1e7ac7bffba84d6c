fn main() {
    std::process::exit(berth::cli::pull::main());
}

fn main() -> std::process::ExitCode {
    curric::cli::main()
}

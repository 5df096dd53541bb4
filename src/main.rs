mod alloc;

#[global_allocator]
static ALLOC: alloc::MiMalloc = alloc::MiMalloc;

fn main() -> std::process::ExitCode {
    portcullis::cli::main()
}

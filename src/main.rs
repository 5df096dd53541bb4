mod alloc;

#[global_allocator]
static ALLOC: alloc::MiMalloc = alloc::MiMalloc;

fn main() -> std::process::ExitCode {
    alloc::disable_transparent_huge_pages();
    let _ = portcullis::RELEASE_FREED_MEMORY.set(alloc::release_freed_memory);
    portcullis::cli::main()
}

fn main() {
    // file!() is the source path; --remap-path-prefix keeps the build directory out
    println!("hello from {}", file!());
}

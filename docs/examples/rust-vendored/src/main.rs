use precomputed_hash::PrecomputedHash;

struct Name(u32);

impl PrecomputedHash for Name {
    fn precomputed_hash(&self) -> u32 {
        self.0
    }
}

fn main() {
    println!("hash {}", Name(42).precomputed_hash());
}

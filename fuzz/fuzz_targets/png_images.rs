#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fedchain_fuzzing::png_images(data));

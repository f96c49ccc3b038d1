#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fedchain_fuzzing::image_files(data));

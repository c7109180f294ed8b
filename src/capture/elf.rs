//! Where the interpreter publishes data for debuggers in this process: an
//! exported symbol (`_PyRuntime`), or an allocated section of one of the
//! loaded ELF objects (`.AsyncioDebug` of the `_asyncio` extension, or of
//! the executable when `_asyncio` is built in).
//!
//! Only the file's ELF header and section header table are read (64-bit
//! little-endian objects, which is every target we build wheels for); the
//! section's run-time address is the object's load base plus its `sh_addr`,
//! and is accepted only inside one of the object's loaded segments.

use std::ffi::{CStr, CString};
use std::io::{Read, Seek, SeekFrom};

/// An allocated section of a loaded object: its address in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    pub address: usize,
    pub size: usize,
}

/// The address of an exported data symbol (`dlsym` over every loaded object).
pub fn exported_symbol(name: &str) -> Option<usize> {
    let name = CString::new(name).ok()?;
    // SAFETY: dlsym with RTLD_DEFAULT only looks the name up; the pointer it
    // returns is not dereferenced here.
    let ptr = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!ptr.is_null()).then_some(ptr as usize)
}

/// A loaded object as the dynamic loader lists it.
struct Loaded {
    /// The file; the executable's own is `/proc/self/exe`.
    path: String,
    base: usize,
    /// (start, end) of each PT_LOAD segment, in this process.
    segments: Vec<(usize, usize)>,
}

fn loaded_objects() -> Vec<Loaded> {
    extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader hands a valid `dl_phdr_info` for the duration
        // of the call, and `data` is the `Vec` passed below.
        unsafe {
            let out = &mut *(data as *mut Vec<Loaded>);
            let info = &*info;
            let name = if info.dlpi_name.is_null() {
                ""
            } else {
                CStr::from_ptr(info.dlpi_name).to_str().unwrap_or("")
            };
            let path = if name.is_empty() {
                "/proc/self/exe".to_string()
            } else {
                name.to_string()
            };
            let base = info.dlpi_addr as usize;
            let mut segments = Vec::new();
            if !info.dlpi_phdr.is_null() {
                for i in 0..info.dlpi_phnum as usize {
                    let ph = &*info.dlpi_phdr.add(i);
                    if ph.p_type == libc::PT_LOAD {
                        let start = base.wrapping_add(ph.p_vaddr as usize);
                        segments.push((start, start.wrapping_add(ph.p_memsz as usize)));
                    }
                }
            }
            out.push(Loaded {
                path,
                base,
                segments,
            });
        }
        0
    }
    let mut out: Vec<Loaded> = Vec::new();
    // SAFETY: `visit` only reads what the loader passes and appends to `out`.
    unsafe {
        libc::dl_iterate_phdr(
            Some(visit),
            &mut out as *mut Vec<Loaded> as *mut libc::c_void,
        );
    }
    out
}

/// The section `name` of the first loaded object whose path `wanted`
/// accepts (the executable's path is `/proc/self/exe`).
pub fn loaded_section(name: &str, wanted: impl Fn(&str) -> bool) -> Option<Section> {
    for object in loaded_objects() {
        if !wanted(&object.path) {
            continue;
        }
        let Some((addr, size)) = file_section(&object.path, name) else {
            continue;
        };
        let address = object.base.checked_add(addr)?;
        let end = address.checked_add(size)?;
        if object
            .segments
            .iter()
            .any(|&(s, e)| s <= address && end <= e)
        {
            return Some(Section { address, size });
        }
    }
    None
}

const SHF_ALLOC: u64 = 2;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// (sh_addr, sh_size) of the allocated section `name` in an ELF file.
pub fn file_section(path: &str, name: &str) -> Option<(usize, usize)> {
    section_in(&mut std::fs::File::open(path).ok()?, name)
}

fn section_in(file: &mut (impl Read + Seek), name: &str) -> Option<(usize, usize)> {
    let mut header = [0u8; 64];
    file.read_exact(&mut header).ok()?;
    let header = &header;
    // 64-bit (class 2), little-endian (data 1).
    if header[..4] != *b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return None;
    }
    let shoff = u64_at(header, 0x28)?;
    let shentsize = usize::from(u16_at(header, 0x3a)?);
    let shnum = usize::from(u16_at(header, 0x3c)?);
    let shstrndx = usize::from(u16_at(header, 0x3e)?);
    if shentsize < 64 || shnum == 0 || shstrndx >= shnum {
        return None;
    }
    let mut table = vec![0u8; shentsize * shnum];
    file.seek(SeekFrom::Start(shoff)).ok()?;
    file.read_exact(&mut table).ok()?;
    let entry = |i: usize| &table[i * shentsize..(i + 1) * shentsize];
    let strtab = entry(shstrndx);
    let (str_off, str_size) = (u64_at(strtab, 0x18)?, u64_at(strtab, 0x20)?);
    if str_size > 1 << 20 {
        return None;
    }
    let mut names = vec![0u8; str_size as usize];
    file.seek(SeekFrom::Start(str_off)).ok()?;
    file.read_exact(&mut names).ok()?;
    for i in 0..shnum {
        let sh = entry(i);
        let at = u32_at(sh, 0)? as usize;
        let Some(rest) = names.get(at..) else {
            continue;
        };
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        if &rest[..end] != name.as_bytes() {
            continue;
        }
        if u64_at(sh, 0x08)? & SHF_ALLOC == 0 {
            return None;
        }
        return Some((
            usize::try_from(u64_at(sh, 0x10)?).ok()?,
            usize::try_from(u64_at(sh, 0x20)?).ok()?,
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_an_allocated_section_of_this_test_binary() {
        let exe = std::env::current_exe().unwrap();
        let (addr, size) = file_section(exe.to_str().unwrap(), ".text").unwrap();
        assert!(addr > 0 && size > 0);
        // A section that is not loaded (no SHF_ALLOC) is not an address.
        assert_eq!(file_section(exe.to_str().unwrap(), ".shstrtab"), None);
        assert_eq!(
            file_section(exe.to_str().unwrap(), ".no-such-section"),
            None
        );
    }

    #[test]
    fn the_loaded_text_section_lies_in_a_segment() {
        let text = loaded_section(".text", |p| p == "/proc/self/exe").unwrap();
        let here = finds_an_allocated_section_of_this_test_binary as *const () as usize;
        assert!(text.address <= here && here < text.address + text.size);
    }

    #[test]
    fn rejects_what_is_not_a_64_bit_little_endian_elf() {
        // A 32-bit object: the same magic, class 1.
        let mut elf32 = vec![0u8; 128];
        elf32[..6].copy_from_slice(b"\x7fELF\x01\x01");
        assert_eq!(section_in(&mut std::io::Cursor::new(elf32), ".text"), None);
        let text = b"not an elf file at all, just some text that is long enough to read".to_vec();
        assert_eq!(section_in(&mut std::io::Cursor::new(text), ".text"), None);
        // The real header with a section table cut short.
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let cut = exe[..4096.min(exe.len())].to_vec();
        assert_eq!(section_in(&mut std::io::Cursor::new(cut), ".text"), None);
    }

    #[test]
    fn finds_an_exported_libc_symbol() {
        assert!(exported_symbol("malloc").is_some());
        assert!(exported_symbol("tbcollect_no_such_symbol").is_none());
    }
}

//! A virtio-blk disk that is a file in the host's filesystem: the guest's
//! reads and writes are the file's (vmm-devices' `Backend` seam).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use vmm_devices::virtio::blk::{Backend, IoError};

pub struct FileDisk {
    file: File,
    size: u64,
}

impl FileDisk {
    /// The file at `path`, opened for reading and writing; its size is the
    /// disk's (whole 512-byte sectors: a tail is not part of the disk).
    pub fn open(path: &str) -> io::Result<FileDisk> {
        let file = File::options().read(true).write(true).open(path)?;
        let size = file.metadata()?.len() & !511;
        Ok(FileDisk { file, size })
    }
}

impl Backend for FileDisk {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&mut self, offset: u64, data: &mut [u8]) -> Result<(), IoError> {
        self.file.read_exact_at(data, offset).map_err(|_| IoError)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), IoError> {
        self.file.write_all_at(data, offset).map_err(|_| IoError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_the_file() {
        let path = std::env::temp_dir().join(format!("pkvm-vmm-disk-{}", std::process::id()));
        std::fs::write(&path, vec![7u8; 1024 + 100]).unwrap();
        let mut d = FileDisk::open(path.to_str().unwrap()).unwrap();
        assert_eq!(d.size(), 1024);
        let mut b = [0u8; 4];
        d.read_at(510, &mut b).unwrap();
        assert_eq!(b, [7; 4]);
        d.write_at(512, b"abcd").unwrap();
        assert_eq!(&std::fs::read(&path).unwrap()[512..516], b"abcd");
        assert!(d.read_at(2000, &mut b).is_err());
        let _ = std::fs::remove_file(&path);
    }
}

//! The CMOS real-time clock, read once at boot for the guests' wallclock (MC146818: registers
//! 0x00-0x09, status A bit 7 "update in progress", status B bit 2 binary mode, bit 1 24-hour),
//! and dom0's mediated access to the CMOS registers afterwards.

use x86_64::instructions::port::Port;

/// Serialises index/data pairs between Hestia and dom0's mediated accesses.
static LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// Reads CMOS register `reg` (0-0x7F).
pub fn read(reg: u8) -> u8 {
    let _g = LOCK.lock();
    let mut idx = Port::<u8>::new(0x70);
    let mut data = Port::<u8>::new(0x71);
    // SAFETY: ports 0x70/0x71 are the CMOS index/data pair; bit 7 of the index (NMI disable)
    // is kept clear; the lock keeps the pair together.
    unsafe {
        idx.write(reg & 0x7f);
        data.read()
    }
}

/// Writes CMOS register `reg` (0-0x7F): dom0 sets the clock and NVRAM this way.
pub fn write(reg: u8, value: u8) {
    let _g = LOCK.lock();
    let mut idx = Port::<u8>::new(0x70);
    let mut data = Port::<u8>::new(0x71);
    // SAFETY: as in `read`; CMOS contents do not affect Hestia after boot.
    unsafe {
        idx.write(reg & 0x7f);
        data.write(value);
    }
}

fn from_bcd(v: u8, binary: bool) -> u32 {
    if binary {
        u32::from(v)
    } else {
        u32::from(v & 0x0f) + u32::from(v >> 4) * 10
    }
}

/// Seconds since the Unix epoch according to the RTC (assumed UTC, 21st century), or `None`
/// if the RTC never settles or reads as nonsense.
pub fn unix_time() -> Option<i64> {
    let snapshot = || -> Option<[u8; 7]> {
        for _ in 0..1_000_000 {
            if read(0x0A) & 0x80 == 0 {
                return Some([
                    read(0x00),
                    read(0x02),
                    read(0x04),
                    read(0x07),
                    read(0x08),
                    read(0x09),
                    read(0x0B),
                ]);
            }
            core::hint::spin_loop();
        }
        None
    };
    // Read until two consecutive snapshots agree (an update may land between reads).
    let mut a = snapshot()?;
    for _ in 0..5 {
        let b = snapshot()?;
        if a == b {
            break;
        }
        a = b;
    }
    let [s, m, h, day, mon, yr, status_b] = a;
    let binary = status_b & 0x04 != 0;
    let mut hour = from_bcd(h & 0x7f, binary);
    if status_b & 0x02 == 0 && h & 0x80 != 0 {
        hour = (hour % 12) + 12;
    }
    hestia_core::time::unix_time(
        2000 + i64::from(from_bcd(yr, binary)),
        from_bcd(mon, binary),
        from_bcd(day, binary),
        hour,
        from_bcd(m, binary),
        from_bcd(s, binary),
    )
}

//! Per-token rate-limit budgets: Procore's main window (reported in `X-Rate-Limit-*`) and an
//! optional spike limit, as pure functions of the emulator's clock (Unix milliseconds).

use std::collections::VecDeque;
use std::time::Duration;

use crate::state::millis;

/// Procore's default budget: 3600 requests per 60-minute window.
pub(crate) const DEFAULT_LIMIT: u64 = 3600;
pub(crate) const DEFAULT_WINDOW_MILLIS: i64 = 3_600_000;

/// A number of requests per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) limit: u64,
    /// At least one millisecond.
    pub(crate) millis: i64,
}

impl Window {
    pub(crate) fn new(limit: u64, window: Duration) -> Self {
        Self {
            limit,
            millis: millis(window).max(1),
        }
    }
}

/// The limits every token's budget follows; fixed once the server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// The window reported in `X-Rate-Limit-*`.
    pub(crate) main: Window,
    /// Set by `EmulatorBuilder::rate_limit`: a token's windows start at its first request
    /// (then at its first request after the previous window ended) and requests over the
    /// limit get 429. Otherwise windows are aligned to the clock (multiples of the window
    /// since the Unix epoch, so the default one resets on the hour) and never enforced.
    pub(crate) enforced: bool,
    /// A sliding-window spike limit, enforced when set.
    pub(crate) spike: Option<Window>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            main: Window {
                limit: DEFAULT_LIMIT,
                millis: DEFAULT_WINDOW_MILLIS,
            },
            enforced: false,
            spike: None,
        }
    }
}

/// What the `X-Rate-Limit-*` headers of a response say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Report {
    pub(crate) limit: u64,
    /// Requests left in the window after this one.
    pub(crate) remaining: u64,
    /// The window's end in Unix seconds, rounded up.
    pub(crate) reset: i64,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exceeded {
    Main,
    Spike,
}

/// The limiter's decision about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Counted; on to the token check.
    Allowed(Report),
    /// 429, not counted.
    Limited {
        report: Report,
        /// Seconds until the request would be allowed, rounded up (at least 1).
        retry_after_secs: u64,
        exceeded: Exceeded,
    },
}

/// `millis / 1000` rounded towards positive infinity.
pub(crate) fn ceil_secs(millis: i64) -> i64 {
    millis
        .div_euclid(1000)
        .saturating_add(i64::from(millis.rem_euclid(1000) != 0))
}

/// A positive number of milliseconds as whole seconds, rounded up.
fn retry_after(millis: i64) -> u64 {
    u64::try_from(ceil_secs(millis)).unwrap_or(0).max(1)
}

/// One token's (or the anonymous requests') use of its limits.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    /// The current main window's end, Unix milliseconds; `None` before the first request.
    window_end: Option<i64>,
    /// Requests counted in the current main window.
    used: u64,
    /// Arrival times of the counted requests still inside the spike window, oldest first;
    /// at most the spike limit of them.
    spike_log: VecDeque<i64>,
}

impl Budget {
    /// The end of the current main window at `now`, if one is running.
    fn current_end(&self, now: i64) -> Option<i64> {
        self.window_end.filter(|end| now < *end)
    }

    /// Where a window starting with a request at `now` ends.
    fn new_window_end(limits: &Limits, now: i64) -> i64 {
        let window = limits.main.millis;
        let start = if limits.enforced {
            now
        } else {
            now.saturating_sub(now.rem_euclid(window))
        };
        start.saturating_add(window)
    }

    /// The headers for a request at `now` that is not counted (a scripted fault): the running
    /// window as it stands, or a fresh one if none runs (without starting it).
    pub(crate) fn report(&self, limits: &Limits, now: i64) -> Report {
        let (end, used) = match self.current_end(now) {
            Some(end) => (end, self.used),
            None => (Self::new_window_end(limits, now), 0),
        };
        Report {
            limit: limits.main.limit,
            remaining: limits.main.limit.saturating_sub(used),
            reset: ceil_secs(end),
        }
    }

    /// Decides about a request arriving at `now` and counts it if it is allowed. Refused
    /// requests count nowhere (neither window).
    pub(crate) fn admit(&mut self, limits: &Limits, now: i64) -> Admission {
        let end = match self.current_end(now) {
            Some(end) => end,
            None => {
                let end = Self::new_window_end(limits, now);
                self.window_end = Some(end);
                self.used = 0;
                end
            }
        };
        let main = limits.main;
        let report = |used: u64| Report {
            limit: main.limit,
            remaining: main.limit.saturating_sub(used),
            reset: ceil_secs(end),
        };
        if limits.enforced && self.used >= main.limit {
            return Admission::Limited {
                report: report(self.used),
                retry_after_secs: retry_after(end.saturating_sub(now)),
                exceeded: Exceeded::Main,
            };
        }
        if let Some(spike) = limits.spike {
            while self
                .spike_log
                .front()
                .is_some_and(|at| at.saturating_add(spike.millis) <= now)
            {
                self.spike_log.pop_front();
            }
            if u64::try_from(self.spike_log.len()).unwrap_or(u64::MAX) >= spike.limit {
                // The oldest counted request leaving the window makes room (with a limit of
                // 0, nothing ever does: a whole window is as good an answer as any).
                let free_at = self
                    .spike_log
                    .front()
                    .map_or(now, |at| *at)
                    .saturating_add(spike.millis);
                return Admission::Limited {
                    report: report(self.used),
                    retry_after_secs: retry_after(free_at.saturating_sub(now)),
                    exceeded: Exceeded::Spike,
                };
            }
            // Kept in order even if the wall clock steps back.
            let at = self.spike_log.back().map_or(now, |last| now.max(*last));
            self.spike_log.push_back(at);
        }
        self.used = self.used.saturating_add(1);
        Admission::Allowed(report(self.used))
    }
}

/// An RFC 9110 IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`, for Unix seconds `secs`.
pub(crate) fn http_date(secs: i64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days: the proleptic Gregorian date of a day count.
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // March = 0
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let weekday = WEEKDAYS[usize::try_from(days.rem_euclid(7)).unwrap_or(0)];
    let month_name = MONTHS[usize::try_from(month - 1).unwrap_or(0)];
    format!(
        "{weekday}, {day:02} {month_name} {year:04} {:02}:{:02}:{:02} GMT",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enforced(limit: u64, window_millis: i64) -> Limits {
        Limits {
            main: Window {
                limit,
                millis: window_millis,
            },
            enforced: true,
            spike: None,
        }
    }

    fn allowed(admission: Admission) -> Report {
        match admission {
            Admission::Allowed(report) => report,
            limited => panic!("expected Allowed, got {limited:?}"),
        }
    }

    #[test]
    fn seconds_round_up_and_down_correctly() {
        assert_eq!(ceil_secs(1_000), 1);
        assert_eq!(ceil_secs(1_001), 2);
        assert_eq!(ceil_secs(1_999), 2);
        assert_eq!(ceil_secs(0), 0);
        assert_eq!(ceil_secs(-1), 0);
        assert_eq!(ceil_secs(-1_000), -1);
        assert_eq!(ceil_secs(i64::MAX), i64::MAX / 1000 + 1);
        assert_eq!(retry_after(1), 1);
        assert_eq!(retry_after(2_000), 2);
        assert_eq!(retry_after(2_001), 3);
        assert_eq!(retry_after(0), 1);
    }

    #[test]
    fn enforced_windows_start_at_the_first_request_and_refuse_without_counting() {
        let limits = enforced(3, 2_000);
        let mut budget = Budget::default();
        // Before any request: a fresh window is reported but not started.
        assert_eq!(
            budget.report(&limits, 10_300),
            Report {
                limit: 3,
                remaining: 3,
                reset: 13
            }
        );
        assert_eq!(budget.window_end, None);

        let first = allowed(budget.admit(&limits, 10_700));
        // The window ends at 12.7 s: the header rounds up to 13.
        assert_eq!(
            first,
            Report {
                limit: 3,
                remaining: 2,
                reset: 13
            }
        );
        assert_eq!(allowed(budget.admit(&limits, 11_000)).remaining, 1);
        assert_eq!(allowed(budget.admit(&limits, 11_500)).remaining, 0);
        for now in [11_600, 12_000, 12_699] {
            assert_eq!(
                budget.admit(&limits, now),
                Admission::Limited {
                    report: Report {
                        limit: 3,
                        remaining: 0,
                        reset: 13
                    },
                    retry_after_secs: u64::try_from(ceil_secs(12_700 - now)).unwrap(),
                    exceeded: Exceeded::Main,
                }
            );
        }
        assert_eq!(budget.used, 3, "429s are not counted");
        // At the window's exact end a new one starts, before the header's second.
        let next = allowed(budget.admit(&limits, 12_700));
        assert_eq!((next.remaining, next.reset), (2, 15));
        // A request long after starts its window at its own arrival.
        let later = allowed(budget.admit(&limits, 100_001));
        assert_eq!((later.remaining, later.reset), (2, 103));
    }

    #[test]
    fn a_client_waking_at_the_reset_second_finds_a_new_window() {
        let limits = enforced(1, 1_500);
        for start in [0, 1, 499, 500, 501, 999] {
            let mut budget = Budget::default();
            let first = allowed(budget.admit(&limits, 50_000 + start));
            assert!(matches!(
                budget.admit(&limits, 50_000 + start + 1),
                Admission::Limited { .. }
            ));
            let reset_millis = first.reset * 1000;
            assert!(reset_millis >= 50_000 + start + 1_500);
            assert_eq!(allowed(budget.admit(&limits, reset_millis)).remaining, 0);
        }
    }

    #[test]
    fn unenforced_windows_are_aligned_to_the_clock_and_count_down_to_zero() {
        let limits = Limits {
            main: Window {
                limit: 2,
                millis: 3_600_000,
            },
            ..Limits::default()
        };
        let mut budget = Budget::default();
        let hour = 3_600_000;
        let first = allowed(budget.admit(&limits, 5 * hour + 1_234));
        assert_eq!((first.remaining, first.reset), (1, 6 * 3600));
        for _ in 0..3 {
            let report = allowed(budget.admit(&limits, 5 * hour + 2_000));
            assert_eq!((report.remaining, report.reset), (0, 6 * 3600));
        }
        let next_hour = allowed(budget.admit(&limits, 6 * hour));
        assert_eq!((next_hour.remaining, next_hour.reset), (1, 7 * 3600));
        assert_eq!(Limits::default().main.limit, 3600);
    }

    #[test]
    fn the_spike_limit_slides_and_keeps_the_main_window_in_the_headers() {
        let limits = Limits {
            spike: Some(Window {
                limit: 2,
                millis: 1_000,
            }),
            ..enforced(10, 60_000)
        };
        let mut budget = Budget::default();
        allowed(budget.admit(&limits, 1_000));
        allowed(budget.admit(&limits, 1_400));
        assert_eq!(
            budget.admit(&limits, 1_500),
            Admission::Limited {
                report: Report {
                    limit: 10,
                    remaining: 8,
                    reset: 61
                },
                retry_after_secs: 1,
                exceeded: Exceeded::Spike,
            }
        );
        // The first request leaves the window at 2.0 s: one slot.
        let report = allowed(budget.admit(&limits, 2_000));
        assert_eq!(report.remaining, 7);
        assert!(matches!(
            budget.admit(&limits, 2_399),
            Admission::Limited {
                exceeded: Exceeded::Spike,
                retry_after_secs: 1,
                ..
            }
        ));
        allowed(budget.admit(&limits, 2_400));
        assert_eq!(budget.spike_log.len(), 2);

        // The main limit is checked first.
        let tight = Limits {
            spike: Some(Window {
                limit: 0,
                millis: 3_000,
            }),
            ..enforced(0, 5_000)
        };
        let mut budget = Budget::default();
        assert!(matches!(
            budget.admit(&tight, 0),
            Admission::Limited {
                exceeded: Exceeded::Main,
                retry_after_secs: 5,
                ..
            }
        ));
        let spike_only = Limits {
            enforced: false,
            ..tight
        };
        assert!(matches!(
            Budget::default().admit(&spike_only, 0),
            Admission::Limited {
                exceeded: Exceeded::Spike,
                retry_after_secs: 3,
                ..
            }
        ));
    }

    #[test]
    fn http_dates_are_imf_fixdates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(951_868_799), "Tue, 29 Feb 2000 23:59:59 GMT");
        assert_eq!(http_date(1_709_251_199), "Thu, 29 Feb 2024 23:59:59 GMT");
        assert_eq!(http_date(4_102_444_800), "Fri, 01 Jan 2100 00:00:00 GMT");
        assert_eq!(http_date(-1), "Wed, 31 Dec 1969 23:59:59 GMT");
    }

    #[test]
    fn zero_windows_become_one_millisecond() {
        assert_eq!(Window::new(5, Duration::ZERO).millis, 1);
        assert_eq!(Window::new(5, Duration::from_micros(2_500)).millis, 2);
        assert_eq!(Window::new(5, Duration::MAX).millis, i64::MAX);
    }
}

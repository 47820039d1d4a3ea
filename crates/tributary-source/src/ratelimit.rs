//! Proactive rate limiting, one budget per credential.
//!
//! A [`RateLimiter`] hands out request slots so that a connection runs at the
//! edge of its allowed rate without being refused. It starts from the
//! manifest's declared policy (`[rate_limit]`: requests per period) and is
//! corrected by what the API says in every response (count / limit / period
//! headers), so it converges on the real budget even when the manifest is
//! wrong or another client spends from the same budget. A 429 pauses the
//! whole budget for the `Retry-After` the API asked for.
//!
//! Every entity sync of a connection goes through the one limiter of its
//! [`Source`](crate::Source). The trait is async and says nothing about where
//! the budget lives, so a cluster can keep it in PostgreSQL; [`LocalRateLimiter`]
//! keeps it in this process.
//!
//! The model is the fixed window PCO uses: a window opens with the first
//! request after the previous one closed and admits `limit` requests for
//! `period`. The client cannot see when the server opened its window, so it
//! aligns on the first response of each window (count 1): that window closes
//! no earlier than one period after the response arrived. Waiting a
//! round-trip longer than necessary costs a few milliseconds per window;
//! sending early costs a 429.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

/// A slot taken from the budget: which window it was counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Permit {
    /// The limiter's window number when the slot was taken.
    pub window: u64,
}

/// What one response said about the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Requests used in the current window, this one included.
    pub count: Option<u32>,
    /// Requests allowed per window.
    pub limit: Option<u32>,
    /// The window's length.
    pub period: Option<Duration>,
    /// When the response arrived.
    pub received: Instant,
}

/// Where a budget stands, for progress displays and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateStatus {
    /// Requests taken in the current window.
    pub used: u32,
    /// Requests allowed per window, as currently believed.
    pub limit: u32,
    /// The window's length.
    pub period: Duration,
    /// Whether the budget is paused after a 429.
    pub paused: bool,
    /// Requests that had to wait for a slot, since the start.
    pub waits: u64,
    /// 429s reported, since the start.
    pub refusals: u64,
}

/// A request budget shared by every request made with one credential.
#[async_trait]
pub trait RateLimiter: Send + Sync + std::fmt::Debug {
    /// Waits until one more request fits in the budget, and takes the slot.
    async fn acquire(&self) -> Permit;
    /// Corrects the budget with what the response to `permit`'s request said.
    async fn observe(&self, permit: Permit, observation: Observation);
    /// The API refused a request (429): no request leaves before `retry_after`.
    async fn pause(&self, retry_after: Duration);
    /// Where the budget stands.
    fn status(&self) -> RateStatus;
}

/// A limiter with no budget of its own (no declared policy) that still
/// honours a 429: everyone waits for its `Retry-After`.
#[derive(Debug, Default)]
pub struct Unlimited {
    paused_until: Mutex<Option<Instant>>,
    refusals: std::sync::atomic::AtomicU64,
}

impl Unlimited {
    fn paused_until(&self) -> Option<Instant> {
        *self
            .paused_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl RateLimiter for Unlimited {
    async fn acquire(&self) -> Permit {
        if let Some(until) = self.paused_until() {
            tokio::time::sleep_until(until).await;
        }
        Permit::default()
    }
    async fn observe(&self, _permit: Permit, _observation: Observation) {}
    async fn pause(&self, retry_after: Duration) {
        self.refusals
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let until = Instant::now() + retry_after;
        let mut paused = self
            .paused_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if paused.is_none_or(|p| p < until) {
            *paused = Some(until);
        }
    }
    fn status(&self) -> RateStatus {
        RateStatus {
            used: 0,
            limit: u32::MAX,
            period: Duration::ZERO,
            paused: self.paused_until().is_some_and(|p| Instant::now() < p),
            waits: 0,
            refusals: self.refusals.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// An in-process [`RateLimiter`].
#[derive(Debug)]
pub struct LocalRateLimiter {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The declared limit, used until the API reports one.
    declared: u32,
    period: Duration,
    /// The smallest limit the API reported in this window and the previous
    /// one (PCO lowers the limit for deep offsets; a mixed workload must
    /// respect the lower one).
    reported_now: Option<u32>,
    reported_before: Option<u32>,
    used: u32,
    /// Counts windows, so that late answers to requests of an earlier
    /// window do not count against this one.
    window: u64,
    /// Requests of this window, and of the previous one, still unanswered.
    /// Those of the previous window may reach the server after its window
    /// closed and count in the next: a new window starts with them reserved,
    /// and each is released when its answer proves otherwise.
    in_flight_now: u32,
    in_flight_prev: u32,
    window_end: Option<Instant>,
    paused_until: Option<Instant>,
    waits: u64,
    refusals: u64,
}

impl State {
    fn limit(&self) -> u32 {
        match (self.reported_now, self.reported_before) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => self.declared,
        }
        .max(1)
    }

    /// Opens a new window at `now` if the current one has closed.
    fn roll(&mut self, now: Instant) {
        if self.window_end.is_none_or(|end| now >= end) {
            self.window_end = Some(now + self.period);
            self.window += 1;
            self.in_flight_prev = self.in_flight_now;
            self.in_flight_now = 0;
            self.used = self.in_flight_prev;
            self.reported_before = self.reported_now.take();
        }
    }
}

impl LocalRateLimiter {
    /// A budget of `requests` per `period` until the API says otherwise.
    pub fn new(requests: u32, period: Duration) -> Self {
        Self {
            state: Mutex::new(State {
                declared: requests.max(1),
                period,
                reported_now: None,
                reported_before: None,
                used: 0,
                window: 0,
                in_flight_now: 0,
                in_flight_prev: 0,
                window_end: None,
                paused_until: None,
                waits: 0,
                refusals: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a slot now, or says until when to wait.
    fn try_take(&self) -> Result<Permit, Instant> {
        let mut state = self.lock();
        let now = Instant::now();
        if let Some(until) = state.paused_until {
            if now < until {
                return Err(until);
            }
            state.paused_until = None;
        }
        state.roll(now);
        if state.used < state.limit() {
            state.used += 1;
            state.in_flight_now += 1;
            Ok(Permit {
                window: state.window,
            })
        } else {
            Err(state.window_end.unwrap_or(now))
        }
    }
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn acquire(&self) -> Permit {
        let mut waited = false;
        loop {
            match self.try_take() {
                Ok(permit) => return permit,
                Err(until) => {
                    if !waited {
                        waited = true;
                        self.lock().waits += 1;
                    }
                    tokio::time::sleep_until(until).await;
                }
            }
        }
    }

    async fn observe(&self, permit: Permit, observation: Observation) {
        let mut state = self.lock();
        let current = permit.window == state.window;
        let previous = permit.window + 1 == state.window;
        if current {
            state.in_flight_now = state.in_flight_now.saturating_sub(1);
        } else if previous {
            state.in_flight_prev = state.in_flight_prev.saturating_sub(1);
        }
        if let Some(period) = observation.period
            && !period.is_zero()
            && period != state.period
        {
            if let Some(end) = state.window_end {
                // Re-base the open window on the reported period.
                let start = end.checked_sub(state.period).unwrap_or(end);
                state.window_end = Some(start + period);
            }
            state.period = period;
        }
        if let Some(limit) = observation.limit {
            state.reported_now = Some(state.reported_now.map_or(limit, |l| l.min(limit)));
        }
        match observation.count {
            // The first request of a server window: it closes no earlier
            // than a period after this response arrived.
            Some(1) => {
                let end = observation.received + state.period;
                if state.window_end.is_none_or(|e| e < end) {
                    state.window_end = Some(end);
                }
                // A request of the previous window that opened the
                // server's new one keeps its reservation in this window.
            }
            // Someone else spends from the same budget (or we restarted
            // mid-window): trust the API's count.
            Some(count) if current && count > state.used => state.used = count,
            // A late answer counted higher than anything this window sent:
            // it landed in the server's previous window; release its slot.
            Some(count) if previous && count > state.used => {
                state.used = state.used.saturating_sub(1);
            }
            // No count at all: nothing proves it landed here either.
            None if previous => state.used = state.used.saturating_sub(1),
            _ => {}
        }
    }

    async fn pause(&self, retry_after: Duration) {
        let mut state = self.lock();
        state.refusals += 1;
        let until = Instant::now() + retry_after;
        if state.paused_until.is_none_or(|p| p < until) {
            state.paused_until = Some(until);
        }
        // The server's window ends when it said; the next one starts fresh.
        state.window_end = Some(until);
        state.used = 0;
    }

    fn status(&self) -> RateStatus {
        let state = self.lock();
        let now = Instant::now();
        RateStatus {
            used: if state.window_end.is_some_and(|e| now < e) {
                state.used
            } else {
                0
            },
            limit: state.limit(),
            period: state.period,
            paused: state.paused_until.is_some_and(|p| now < p),
            waits: state.waits,
            refusals: state.refusals,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A permit of the limiter's current window.
    fn now_of(limiter: &LocalRateLimiter) -> Permit {
        Permit {
            window: limiter.lock().window,
        }
    }

    fn seen(count: u32, limit: u32, period: u64) -> Observation {
        Observation {
            count: Some(count),
            limit: Some(limit),
            period: Some(Duration::from_secs(period)),
            received: Instant::now(),
        }
    }

    /// An answer without budget headers.
    fn answered() -> Observation {
        Observation {
            count: None,
            limit: None,
            period: None,
            received: Instant::now(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn admits_the_declared_budget_per_window() {
        let limiter = LocalRateLimiter::new(10, Duration::from_secs(20));
        let start = Instant::now();
        for _ in 0..10 {
            let permit = limiter.acquire().await;
            limiter.observe(permit, answered()).await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        limiter.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(20));
        assert_eq!(limiter.status().used, 1);
        assert_eq!(limiter.status().waits, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn headers_correct_the_limit_and_period() {
        let limiter = LocalRateLimiter::new(100, Duration::from_secs(60));
        limiter.acquire().await;
        limiter.observe(now_of(&limiter), seen(1, 5, 10)).await;
        let status = limiter.status();
        assert_eq!((status.limit, status.period), (5, Duration::from_secs(10)));
        let start = Instant::now();
        for _ in 0..4 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        limiter.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_aligns_on_the_first_response() {
        let limiter = LocalRateLimiter::new(2, Duration::from_secs(20));
        let start = Instant::now();
        limiter.acquire().await;
        // The server opened its window when the request arrived, 300 ms later.
        tokio::time::advance(Duration::from_millis(300)).await;
        limiter.observe(now_of(&limiter), seen(1, 2, 20)).await;
        limiter.acquire().await;
        limiter.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_millis(20_300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_higher_count_means_someone_else_spends_the_budget() {
        let limiter = LocalRateLimiter::new(10, Duration::from_secs(20));
        limiter.acquire().await;
        limiter.observe(now_of(&limiter), seen(9, 10, 20)).await;
        let start = Instant::now();
        limiter.acquire().await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        limiter.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(20));
    }

    #[tokio::test(start_paused = true)]
    async fn late_answers_from_an_earlier_window_do_not_count() {
        let limiter = LocalRateLimiter::new(10, Duration::from_secs(20));
        let old = limiter.acquire().await;
        tokio::time::advance(Duration::from_secs(21)).await;
        let start = Instant::now();
        limiter.acquire().await;
        // The answer to the old request arrives now, reporting a nearly full window.
        limiter.observe(old, seen(9, 10, 20)).await;
        for _ in 0..9 {
            limiter.acquire().await;
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the new window is not poisoned"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_at_the_boundary_is_reserved_in_the_next_window() {
        let limiter = LocalRateLimiter::new(10, Duration::from_secs(20));
        let mut last = Permit::default();
        for i in 0..10 {
            let permit = limiter.acquire().await;
            if i < 9 {
                limiter.observe(permit, seen(i + 1, 10, 20)).await;
            } else {
                last = permit; // still unanswered when the window closes
            }
        }
        tokio::time::advance(Duration::from_secs(20)).await;
        let start = Instant::now();
        for _ in 0..9 {
            limiter.acquire().await;
        }
        // It reached the server late and opened the server's new window.
        limiter.observe(last, seen(1, 10, 20)).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(limiter.status().used, 10, "its slot stays taken");
        limiter.acquire().await;
        assert!(
            start.elapsed() >= Duration::from_secs(20),
            "an 11th would be a 429"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reservation_is_released_when_the_answer_proves_the_old_window() {
        let limiter = LocalRateLimiter::new(10, Duration::from_secs(20));
        let old = limiter.acquire().await;
        tokio::time::advance(Duration::from_secs(21)).await;
        limiter.acquire().await;
        assert_eq!(limiter.status().used, 2, "one sent, one reserved");
        limiter.observe(old, seen(7, 10, 20)).await;
        assert_eq!(limiter.status().used, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lower_limit_sticks_for_the_next_window() {
        let limiter = LocalRateLimiter::new(100, Duration::from_secs(20));
        limiter.acquire().await;
        limiter.observe(now_of(&limiter), seen(1, 75, 20)).await;
        tokio::time::advance(Duration::from_secs(21)).await;
        limiter.acquire().await;
        assert_eq!(limiter.status().limit, 75);
        limiter.observe(now_of(&limiter), seen(1, 100, 20)).await;
        assert_eq!(
            limiter.status().limit,
            75,
            "still the lower one of two windows"
        );
        tokio::time::advance(Duration::from_secs(21)).await;
        limiter.acquire().await;
        assert_eq!(limiter.status().limit, 100);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_pauses_everyone_for_retry_after() {
        let limiter = std::sync::Arc::new(LocalRateLimiter::new(100, Duration::from_secs(20)));
        let refused = limiter.acquire().await;
        limiter.observe(refused, answered()).await;
        limiter.pause(Duration::from_secs(7)).await;
        assert!(limiter.status().paused);
        let start = Instant::now();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move { limiter.acquire().await })
            })
            .collect();
        for waiter in waiters {
            waiter.await.unwrap();
        }
        assert_eq!(start.elapsed(), Duration::from_secs(7));
        assert_eq!(limiter.status().refusals, 1);
        assert_eq!(limiter.status().used, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_waits_only_for_a_refusal() {
        let limiter = Unlimited::default();
        let start = Instant::now();
        for _ in 0..1000 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        limiter.pause(Duration::from_secs(2)).await;
        limiter.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(limiter.status().refusals, 1);
    }
}

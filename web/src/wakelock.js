// A Screen Wake Lock held while the page serves a stage, where the browser offers one:
// a phone that dims its screen throttles the page. The browser drops the lock when the
// page is hidden; it is asked for again when the page is visible.

export class ScreenWakeLock {
  constructor(nav = globalThis.navigator, doc = globalThis.document) {
    this.nav = nav;
    this.doc = doc;
    this.wanted = false;
    this.sentinel = null;
    this.state = nav?.wakeLock ? 'released' : 'not offered';
    doc?.addEventListener?.('visibilitychange', () => this.sync());
  }

  want(wanted) {
    if (wanted === this.wanted) return;
    this.wanted = wanted;
    this.sync();
  }

  async sync() {
    if (!this.nav?.wakeLock) return;
    if (this.wanted && !this.sentinel && this.doc?.visibilityState === 'visible') {
      try {
        this.sentinel = await this.nav.wakeLock.request('screen');
        this.state = 'held';
        this.sentinel.addEventListener('release', () => {
          this.sentinel = null;
          this.state = 'released';
        });
      } catch (error) {
        this.state = `refused (${error.name})`;
      }
    } else if (!this.wanted && this.sentinel) {
      const sentinel = this.sentinel;
      this.sentinel = null;
      await sentinel.release();
      this.state = 'released';
    }
  }
}

// A test double of Telegram's window.Telegram.WebApp, as a Mini App meets it inside Telegram,
// carrying real initData (signed with the test bot's token). What the app asks of Telegram
// (an invoice, a link) is recorded in window.__telegram for the test, which plays Telegram's
// part: it pays through the fake Bot API and calls back as Telegram would.
(() => {
  const setup = JSON.parse(SETUP_JSON);
  const handlers = {};
  const button = () => ({
    text: '', isVisible: false, isProgressVisible: false, callbacks: [],
    showProgress() { this.isProgressVisible = true; return this; },
    hideProgress() { this.isProgressVisible = false; return this; },
    setText(text) { this.text = text; return this; },
    show() { this.isVisible = true; return this; },
    hide() { this.isVisible = false; return this; },
    onClick(f) { this.callbacks.push(f); return this; },
    offClick(f) { this.callbacks = this.callbacks.filter((g) => g !== f); return this; },
  });
  window.__telegram = { invoices: [], links: [], invoiceCallbacks: [], ready: false, expanded: false };
  window.Telegram = {
    WebApp: {
      initData: setup.initData,
      version: '8.0',
      platform: 'android',
      colorScheme: setup.colorScheme,
      themeParams: setup.themeParams,
      ready() { window.__telegram.ready = true; },
      expand() { window.__telegram.expanded = true; },
      onEvent(event, f) { (handlers[event] = handlers[event] || []).push(f); },
      offEvent(event, f) { handlers[event] = (handlers[event] || []).filter((g) => g !== f); },
      openInvoice(url, callback) {
        window.__telegram.invoices.push(url);
        window.__telegram.invoiceCallbacks.push(callback);
      },
      openLink(url) { window.__telegram.links.push(url); },
      MainButton: button(),
      BackButton: button(),
    },
  };
  // What Telegram does when the invoice form closes with `status`.
  window.__telegram.closeInvoice = (status) => {
    const url = window.__telegram.invoices[window.__telegram.invoices.length - 1];
    window.__telegram.invoiceCallbacks.pop()(status);
    for (const f of handlers.invoiceClosed || []) f({ url, status });
  };
  // What Telegram does when the user's theme changes to `scheme` with `params`.
  window.__telegram.changeTheme = (scheme, params) => {
    window.Telegram.WebApp.colorScheme = scheme;
    window.Telegram.WebApp.themeParams = params;
    for (const f of handlers.themeChanged || []) f();
  };
  window.__telegram.press = (which) => {
    for (const f of window.Telegram.WebApp[which].callbacks) f();
  };
})();

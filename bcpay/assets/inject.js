/*! bcpay storefront snippet: OKCloud Pay (CeleryPay) on BigCommerce's order confirmation page.
 *
 * Installed by bcpay as ONE Script Manager script (bcpay/snippet.py). Flow:
 *   1. find the order id (data-order-id, the page's own /api/storefront/order(s)/{id}
 *      calls seen through fetch/XHR or Resource Timing, window.checkoutConfig.orderId,
 *      the URL path);
 *   2. read the order (same origin, session cookie) and do nothing at all unless it was
 *      placed with the configured method and is AWAITING_PAYMENT;
 *   3. POST {bcpay}/api/v1/payments, show a panel and send the shopper to the cashier;
 *   4. back from the cashier (#bcpay_token in the URL, or sessionStorage), poll
 *      GET {bcpay}/api/v1/payments/{token} and show the real outcome.
 * bcpay is the only source of truth: page values and celerypay_* query parameters are
 * hints. Plain ES2017, no dependencies, no globals but window.bcpayOkcloud, no eval, no
 * inline handlers; every error is caught so the host page can never break.
 */
(function () {
  'use strict';

  var NS = 'bcpayOkcloud';
  var VERSION = '1.0.0';
  try {
    if (window[NS]) return; // loaded twice: the first copy does the work
  } catch (e) { return; }

  var api = {
    version: VERSION, state: 'starting', reason: null, history: ['starting'],
    orderId: null, orderSource: null, token: null, lang: null, seen: [], lastError: null
  };
  try {
    Object.defineProperty(window, NS, { value: api, writable: false, configurable: false });
  } catch (e) { return; }

  var script = document.currentScript; // only readable now, while the file runs
  var nativeFetch = window.fetch;       // our own calls never go through our wrapper
  var noop = function () {};
  var hasOwn = function (o, k) { return Object.prototype.hasOwnProperty.call(o, k); };

  // ---------------------------------------------------------------- texts
  var TEXTS = {
    en: {
      pay_title: 'Complete your payment with {method}',
      pay_body: 'Your order #{order} has been placed but is not paid yet.',
      amount_due: 'Amount due: {amount}',
      amount_paid: 'Amount: {amount}',
      pay_button: 'Pay now',
      redirecting: 'Taking you to {method}\u2026',
      stay_here: 'Stay on this page',
      loading: 'Preparing your payment\u2026',
      confirming_title: 'Confirming your payment\u2026',
      confirming_body: 'This usually takes a few seconds. Please keep this page open.',
      checking_body: 'We are checking the payment status with {method}.',
      received_title: 'Payment received',
      received_body: 'Thank you! Your payment with {method} was received.',
      review_body: 'Thank you! Your payment was received and the store is verifying it.',
      failed_title: 'Payment failed',
      failed_body: 'Your payment with {method} did not go through.',
      cancelled_body: 'The payment was cancelled.',
      expired_body: 'The payment session expired.',
      retry_payment: 'Try again',
      pending_title: 'Still confirming',
      pending_body: 'We have not received the confirmation from {method} yet. If you have paid, ' +
        'there is nothing more to do: your order will be updated shortly.',
      pending_link: 'Check or complete your payment',
      check_again: 'Check again',
      unreachable_title: 'We could not reach {method}.',
      unreachable_body: 'Please check your connection and retry.',
      retry: 'Retry',
      unavailable_title: 'Payment unavailable',
      unavailable_body: '{method} cannot take the payment for this order right now. Please contact the store.',
      refunded_title: 'Payment refunded',
      refunded_body: 'The payment for this order was refunded.'
    },
    zh: {
      pay_title: '\u4f7f\u7528 {method} \u5b8c\u6210\u4ed8\u6b3e',
      pay_body: '\u60a8\u7684\u8ba2\u5355 #{order} \u5df2\u63d0\u4ea4\uff0c\u4f46\u5c1a\u672a\u4ed8\u6b3e\u3002',
      amount_due: '\u5e94\u4ed8\u91d1\u989d\uff1a{amount}',
      amount_paid: '\u91d1\u989d\uff1a{amount}',
      pay_button: '\u7acb\u5373\u4ed8\u6b3e',
      redirecting: '\u6b63\u5728\u8df3\u8f6c\u5230 {method}\u2026',
      stay_here: '\u7559\u5728\u6b64\u9875',
      loading: '\u6b63\u5728\u51c6\u5907\u4ed8\u6b3e\u2026',
      confirming_title: '\u6b63\u5728\u786e\u8ba4\u60a8\u7684\u4ed8\u6b3e\u2026',
      confirming_body: '\u901a\u5e38\u53ea\u9700\u51e0\u79d2\u949f\uff0c\u8bf7\u4e0d\u8981\u5173\u95ed\u6b64\u9875\u9762\u3002',
      checking_body: '\u6211\u4eec\u6b63\u5728\u5411 {method} \u67e5\u8be2\u4ed8\u6b3e\u72b6\u6001\u3002',
      received_title: '\u5df2\u6536\u5230\u4ed8\u6b3e',
      received_body: '\u8c22\u8c22\uff01\u60a8\u901a\u8fc7 {method} \u7684\u4ed8\u6b3e\u5df2\u6536\u5230\u3002',
      review_body: '\u8c22\u8c22\uff01\u60a8\u7684\u4ed8\u6b3e\u5df2\u6536\u5230\uff0c\u5546\u5bb6\u6b63\u5728\u6838\u5b9e\u3002',
      failed_title: '\u4ed8\u6b3e\u5931\u8d25',
      failed_body: '\u60a8\u901a\u8fc7 {method} \u7684\u4ed8\u6b3e\u672a\u6210\u529f\u3002',
      cancelled_body: '\u4ed8\u6b3e\u5df2\u53d6\u6d88\u3002',
      expired_body: '\u4ed8\u6b3e\u4f1a\u8bdd\u5df2\u8fc7\u671f\u3002',
      retry_payment: '\u91cd\u65b0\u4ed8\u6b3e',
      pending_title: '\u4ecd\u5728\u786e\u8ba4\u4e2d',
      pending_body: '\u6211\u4eec\u5c1a\u672a\u6536\u5230 {method} \u7684\u4ed8\u6b3e\u786e\u8ba4\u3002' +
        '\u5982\u679c\u60a8\u5df2\u4ed8\u6b3e\uff0c\u65e0\u9700\u4efb\u4f55\u64cd\u4f5c\uff0c\u8ba2\u5355\u7a0d\u540e\u4f1a\u81ea\u52a8\u66f4\u65b0\u3002',
      pending_link: '\u67e5\u770b\u6216\u5b8c\u6210\u4ed8\u6b3e',
      check_again: '\u518d\u6b21\u67e5\u8be2',
      unreachable_title: '\u65e0\u6cd5\u8fde\u63a5\u5230 {method}\u3002',
      unreachable_body: '\u8bf7\u68c0\u67e5\u7f51\u7edc\u8fde\u63a5\u540e\u91cd\u8bd5\u3002',
      retry: '\u91cd\u8bd5',
      unavailable_title: '\u6682\u65f6\u65e0\u6cd5\u4ed8\u6b3e',
      unavailable_body: '{method} \u76ee\u524d\u65e0\u6cd5\u5904\u7406\u6b64\u8ba2\u5355\u7684\u4ed8\u6b3e\uff0c\u8bf7\u8054\u7cfb\u5546\u5bb6\u3002',
      refunded_title: '\u4ed8\u6b3e\u5df2\u9000\u6b3e',
      refunded_body: '\u6b64\u8ba2\u5355\u7684\u4ed8\u6b3e\u5df2\u9000\u6b3e\u3002'
    }
  };

  // ---------------------------------------------------------------- pure helpers
  function positiveInt(value) {
    if (typeof value === 'number') return Number.isSafeInteger(value) && value > 0 ? value : null;
    var m = /^\s*([1-9][0-9]{0,15})\s*$/.exec(String(value == null ? '' : value));
    var n = m ? Number(m[1]) : NaN;
    return Number.isSafeInteger(n) ? n : null;
  }

  function norm(value) { return typeof value === 'string' ? value.trim().toLowerCase() : ''; }

  function paidWith(order, method) {
    var want = norm(method);
    var payments = order && Array.isArray(order.payments) ? order.payments : [];
    return Boolean(want) && payments.some(function (p) {
      return Boolean(p) && (norm(p.description) === want || norm(p.providerId) === want);
    });
  }

  function chooseLang(dataLang, docLang, channelLang) {
    var v = norm(dataLang);
    if (!v || v === 'auto') v = norm(docLang);
    if (!v) v = norm(channelLang); // the channel's language, when the page declares none
    return v.slice(0, 2) === 'zh' ? 'zh' : 'en';
  }

  function format(template, vars) {
    return String(template).replace(/\{(\w+)\}/g, function (m, k) {
      return hasOwn(vars, k) && vars[k] != null ? String(vars[k]) : m;
    });
  }

  function safeUrl(value) { // only http(s): a bad answer must not become a javascript: URL
    try {
      var u = new URL(String(value), location.href);
      return u.protocol === 'https:' || u.protocol === 'http:' ? u.href : null;
    } catch (e) { return null; }
  }

  // Both paths exist in BigCommerce's docs (reference: orders, guide: order).
  function orderIdFromUrl(value) {
    try {
      if (value == null || String(value).indexOf('/api/storefront/order') < 0) return null;
      var u = new URL(String(value), location.href);
      if (u.origin !== location.origin) return null;
      var m = /^\/api\/storefront\/orders?\/([0-9]+)\/?$/.exec(u.pathname);
      return m ? positiveInt(m[1]) : null;
    } catch (e) { return null; }
  }

  api.util = Object.freeze({
    positiveInt: positiveInt, paidWith: paidWith, chooseLang: chooseLang,
    format: format, safeUrl: safeUrl, orderIdFromUrl: orderIdFromUrl
  });

  // ---------------------------------------------------------------- plumbing
  function report(err) {
    try {
      api.lastError = String(err && err.message ? err.message : err);
      if (window.console && console.warn) console.warn('[bcpay] ' + api.lastError);
    } catch (e) { /* nothing left to do */ }
  }
  function safe(fn) {
    return function () { try { return fn.apply(this, arguments); } catch (e) { report(e); } };
  }
  function run(fn) {
    try { return Promise.resolve().then(fn).catch(report); } catch (e) { report(e); }
  }
  function sleep(ms) { return new Promise(function (resolve) { setTimeout(resolve, ms); }); }
  function now() { return Date.now(); }
  function setState(state, reason) {
    api.state = state;
    api.reason = reason || null;
    if (api.history.length < 100) api.history.push(state);
  }

  function attr(name) {
    var v = script ? script.getAttribute(name) : null;
    return v == null ? '' : String(v).trim();
  }
  function num(name, dflt, min, max) {
    var n = positiveInt(attr(name));
    if (n == null && attr(name) === '0') n = 0;
    return n == null ? dflt : Math.min(Math.max(n, min), max);
  }
  function readConfig() {
    if (!script || !script.getAttribute('data-bcpay-url')) {
      script = document.querySelector('script[data-bcpay-url]');
    }
    var texts = null;
    try { texts = attr('data-texts') ? JSON.parse(attr('data-texts')) : null; } catch (e) { texts = null; }
    return {
      base: /^https?:\/\/[^/]/i.test(attr('data-bcpay-url')) ? attr('data-bcpay-url').replace(/\/+$/, '') : '',
      store: /^[a-z0-9]{1,32}$/.test(attr('data-store-hash')) ? attr('data-store-hash') : '',
      method: attr('data-method-name') || 'OKCloud Pay',
      lang: attr('data-lang') || 'auto',
      defaultLang: attr('data-default-lang') || '',
      orderId: positiveInt(attr('data-order-id')), // raw {{checkout.order.id}} or empty: absent
      texts: texts,
      // Timing knobs; tests shorten them. Defaults follow the issue (1 s to 5 s, ~2 min).
      pollMs: num('data-poll-ms', 1000, 10, 60000),
      pollMaxMs: num('data-poll-max-ms', 5000, 10, 60000),
      pollTotalMs: num('data-poll-total-ms', 120000, 50, 600000),
      redirectMs: num('data-redirect-ms', 1000, 0, 600000),
      orderWaitMs: num('data-order-wait-ms', 15000, 0, 120000),
      timeoutMs: num('data-timeout-ms', 15000, 100, 120000)
    };
  }

  var cfg = null;
  var ctx = { orderId: null, cartId: null, token: null, hint: '', pageOrderId: null };
  var flow = 0; // generation counter: a newer flow silently ends older loops
  var redirectTimer = null;

  // ---------------------------------------------------------------- finding the order id
  var onPageCall = null;
  var hooked = false;
  function notePageCall(via, id) {
    if (api.seen.length < 20) api.seen.push({ via: via, id: id });
    if (onPageCall) onPageCall(id, via);
  }

  // Wrap fetch and XHR to observe the page's own order call; the original promise and
  // XHR object go back untouched and nothing waits on us.
  function installHooks() {
    if (hooked) return;
    hooked = true;
    try {
      if (typeof nativeFetch === 'function') {
        var wrapped = function fetch(input, init) { // eslint-disable-line no-unused-vars
          var p = nativeFetch.apply(this, arguments);
          try {
            var id = orderIdFromUrl(typeof input === 'string' ? input : (input && input.url) || input);
            if (id && p && typeof p.then === 'function') {
              p.then(function (res) {
                try { if (res && res.ok) notePageCall('fetch', id); } catch (e) { /* observe only */ }
              }, noop);
            }
          } catch (e) { /* observe only */ }
          return p;
        };
        window.fetch = wrapped;
      }
    } catch (e) { report(e); }
    try {
      var proto = window.XMLHttpRequest && window.XMLHttpRequest.prototype;
      if (proto && typeof proto.open === 'function' && typeof WeakMap === 'function') {
        var nativeOpen = proto.open;
        var ids = new WeakMap();
        var onLoad = function () {
          try {
            var id = ids.get(this);
            if (id && this.status >= 200 && this.status < 300) notePageCall('xhr', id);
          } catch (e) { /* observe only */ }
        };
        proto.open = function open(method, url) { // eslint-disable-line no-unused-vars
          try {
            var id = orderIdFromUrl(url);
            if (id) {
              if (!ids.has(this)) this.addEventListener('load', onLoad);
              ids.set(this, id);
            } else if (ids.has(this)) {
              ids.set(this, null); // the same XHR object reused for another URL
            }
          } catch (e) { /* observe only */ }
          return nativeOpen.apply(this, arguments);
        };
      }
    } catch (e) { report(e); }
  }

  var scanned = typeof WeakSet === 'function' ? new WeakSet() : null;
  function fromResources() { // calls that finished before we loaded
    try {
      var entries = performance.getEntriesByType('resource');
      for (var i = 0; i < entries.length; i++) {
        var e = entries[i];
        var status = e.responseStatus; // not in every browser; absent means unknown
        var id = orderIdFromUrl(e.name);
        if (id && !(status >= 400)) {
          if (scanned && !scanned.has(e)) { scanned.add(e); notePageCall('resource', id); }
          return { id: id, via: 'resource' };
        }
      }
    } catch (e) { /* no Resource Timing */ }
    return null;
  }
  function fromCheckoutConfig() {
    try {
      var id = window.checkoutConfig ? positiveInt(window.checkoutConfig.orderId) : null;
      return id ? { id: id, via: 'checkoutConfig' } : null;
    } catch (e) { return null; }
  }
  function fromPath() {
    var m = /\/order-confirmation\/([0-9]+)\/?$/.exec(location.pathname);
    var id = m ? positiveInt(m[1]) : null;
    return id ? { id: id, via: 'url' } : null;
  }

  function findOrderId(waitMs) {
    return new Promise(function (resolve) {
      var first = (cfg.orderId && { id: cfg.orderId, via: 'attribute' }) ||
        fromCheckoutConfig() || fromResources() || fromPath();
      var done = false, timer = null;
      var found = function (id, via) {
        if (done) return;
        done = true;
        onPageCall = null;
        if (timer) clearInterval(timer);
        api.orderSource = id ? via : null;
        api.orderId = id;
        resolve(id);
      };
      if (first) return found(first.id, first.via);
      setState('waiting_order');
      onPageCall = found;
      installHooks();
      var deadline = now() + (waitMs == null ? cfg.orderWaitMs : waitMs);
      timer = setInterval(safe(function () {
        var c = fromCheckoutConfig() || fromResources();
        if (c) found(c.id, c.via);
        else if (now() >= deadline) found(null, null);
      }), 250);
    });
  }

  // ---------------------------------------------------------------- network
  async function readOrder(id) {
    for (var attempt = 0; attempt < 3; attempt++) {
      // Bounded like bcpay's own calls: a hanging storefront API must not leave the panel waiting.
      var ctl = typeof AbortController === 'function' ? new AbortController() : null;
      var timer = ctl ? setTimeout(function () { ctl.abort(); }, cfg.timeoutMs) : null;
      try {
        var res = await nativeFetch.call(window, '/api/storefront/orders/' + id + '?include=payments', {
          credentials: 'include', cache: 'no-store', headers: { Accept: 'application/vnd.bc.v1+json' },
          signal: ctl ? ctl.signal : undefined
        });
        if (res.ok) {
          var order = await res.json();
          return order && typeof order === 'object' ? order : null;
        }
        if (res.status < 500) return null;
      } catch (e) { /* network or timeout: retry below */ } finally { if (timer) clearTimeout(timer); }
      await sleep(300 * (attempt + 1));
    }
    return null;
  }

  // Never credentials: bcpay needs none and its CORS does not allow them.
  async function bcpay(method, path, body) {
    var ctl = typeof AbortController === 'function' ? new AbortController() : null;
    var timer = ctl ? setTimeout(function () { ctl.abort(); }, cfg.timeoutMs) : null;
    try {
      var init = { method: method, mode: 'cors', credentials: 'omit', cache: 'no-store' };
      if (ctl) init.signal = ctl.signal;
      if (body) {
        init.headers = { 'Content-Type': 'application/json' };
        init.body = JSON.stringify(body);
      }
      var res = await nativeFetch.call(window, cfg.base + path, init);
      var data = null;
      try { data = await res.json(); } catch (e) { data = null; }
      var wait = positiveInt(res.headers.get('Retry-After')); // readable only if exposed
      return { status: res.status, data: data, retryMs: wait ? Math.min(wait, 30) * 1000 : 0 };
    } catch (e) {
      return { status: 0, data: null, retryMs: 0 };
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  function isView(v) { return Boolean(v) && typeof v === 'object' && typeof v.token === 'string' && typeof v.state === 'string'; }
  function errorCode(data) { return data && data.error && typeof data.error.code === 'string' ? data.error.code : ''; }
  function outcomeOf(view) {
    return { paid: 'received', under_review: 'review', failed: 'failed', expired: 'failed',
      cancelled: 'failed', refunded: 'refunded' }[view.state] || null;
  }

  // ---------------------------------------------------------------- session memory
  function storageKey(orderId) { return 'bcpay-okcloud:' + cfg.store + ':' + orderId; }
  function remember() {
    try {
      if (ctx.orderId && ctx.token) {
        sessionStorage.setItem(storageKey(ctx.orderId), JSON.stringify({ t: ctx.token, c: ctx.cartId || null }));
      }
    } catch (e) { /* storage disabled: the URL token still works */ }
  }
  function recall(orderId) {
    try {
      var v = JSON.parse(sessionStorage.getItem(storageKey(orderId)) || 'null');
      return v && typeof v.t === 'string' ? v : null;
    } catch (e) { return null; }
  }
  function forget(orderId) {
    try { if (orderId) sessionStorage.removeItem(storageKey(orderId)); } catch (e) { /* ignore */ }
  }
  // bcpay's return hop adds #bcpay_token= (a fragment: never sent to the store's server, its
  // logs or the analytics that record page URLs; links made before used ?bcpay_token=). It is
  // read once and taken out of the address bar. Themes may pass celerypay_status through:
  // unsigned, it only picks the wording shown while bcpay is asked.
  function readReturn() {
    var found = { token: null, hint: '' };
    try {
      var query = new URLSearchParams(location.search);
      var frag = new URLSearchParams(location.hash.slice(1));
      var t = frag.get('bcpay_token') || query.get('bcpay_token') || '';
      found.token = /^[A-Za-z0-9_-]{8,128}$/.test(t) ? t : null;
      found.hint = norm(frag.get('celerypay_status') || query.get('celerypay_status') || '');
      if (frag.has('bcpay_token') || query.has('bcpay_token')) {
        var hash = location.hash.slice(1);
        if (frag.has('bcpay_token')) { frag.delete('bcpay_token'); hash = frag.toString(); }
        query.delete('bcpay_token');
        var search = query.toString();
        history.replaceState(history.state, '', location.pathname + (search ? '?' + search : '') +
          (hash ? '#' + hash : ''));
      }
    } catch (e) { /* keep what was read */ }
    return found;
  }
  function adopt(view) {
    ctx.token = view.token;
    api.token = view.token;
    var id = positiveInt(view.order_id);
    if (id) { ctx.orderId = id; api.orderId = id; }
    ctx.view = view;
  }

  // ---------------------------------------------------------------- panel
  var CSS = [
    '.bcpay-okcloud{box-sizing:border-box;margin:0 0 1.5rem;padding:1.25rem 1.5rem;border:1px solid #c5d0de;',
    'border-left:6px solid #1a56b0;border-radius:6px;background:#f5f8fc;color:#1b1f24;font:inherit;line-height:1.5;text-align:left}',
    '.bcpay-okcloud--success{border-left-color:#1e7b34;background:#f1f8f3}',
    '.bcpay-okcloud--error{border-left-color:#b3261e;background:#fdf3f2}',
    '.bcpay-okcloud__title{margin:0 0 .5rem;font-size:1.25rem;font-weight:700;line-height:1.3;color:inherit}',
    '.bcpay-okcloud__title:focus{outline:none}',
    '.bcpay-okcloud p{margin:0 0 .5rem;color:inherit}',
    '.bcpay-okcloud .bcpay-okcloud__amount{font-size:1.25rem;font-weight:700}',
    '.bcpay-okcloud [hidden]{display:none}',
    '.bcpay-okcloud__actions{display:flex;flex-wrap:wrap;gap:.75rem;align-items:center;margin-top:.75rem}',
    '.bcpay-okcloud__actions:empty{display:none}',
    '.bcpay-okcloud__button{-webkit-appearance:none;appearance:none;min-height:44px;padding:.6rem 1.5rem;border:2px solid #1a56b0;',
    'border-radius:4px;background:#1a56b0;color:#fff;font:inherit;font-weight:700;cursor:pointer}',
    '.bcpay-okcloud__button:hover{background:#123f82;border-color:#123f82}',
    '.bcpay-okcloud__button--secondary{background:#fff;color:#1a56b0}',
    '.bcpay-okcloud__button--secondary:hover{background:#e8eef8;color:#123f82}',
    '.bcpay-okcloud__button[disabled]{opacity:.65;cursor:progress}',
    '.bcpay-okcloud__link{color:#1a56b0;font-weight:700;text-decoration:underline}',
    '.bcpay-okcloud__button:focus-visible,.bcpay-okcloud__link:focus-visible{outline:3px solid #1b1f24;outline-offset:2px;',
    'box-shadow:0 0 0 5px #ffbf47}',
    '.bcpay-okcloud__spinner{display:inline-block;width:.9em;height:.9em;margin-right:.5em;vertical-align:-.1em;',
    'border:2px solid currentColor;border-right-color:transparent;border-radius:50%;animation:bcpay-okcloud-spin .8s linear infinite}',
    '@keyframes bcpay-okcloud-spin{to{transform:rotate(360deg)}}',
    '@media (prefers-reduced-motion:reduce){.bcpay-okcloud__spinner{animation:none}}'
  ].join('');

  // Best first: above BigCommerce's confirmation content, else the top of the page.
  var ANCHORS = [
    ['.orderConfirmation', 'before'],
    ['[data-test="order-confirmation-heading"]', 'before'],
    ['main', 'prepend'],
    ['#checkout-app', 'prepend'],
    ['body', 'prepend']
  ];
  var ui = { panel: null, rank: 99, observer: null, texts: null, lastKey: '' };

  function texts() {
    if (ui.texts) return ui.texts;
    var lang = chooseLang(cfg.lang, document.documentElement.getAttribute('lang'), cfg.defaultLang);
    var t = Object.assign({}, TEXTS.en, TEXTS[lang]);
    [cfg.texts, window.bcpayOkcloudTexts].forEach(function (src) {
      if (!src || typeof src !== 'object') return;
      [src, src[lang], lang === 'zh' ? src['zh-CN'] || src['zh-cn'] : null].forEach(function (layer) {
        if (!layer || typeof layer !== 'object') return;
        Object.keys(layer).forEach(function (k) {
          if (hasOwn(TEXTS.en, k) && typeof layer[k] === 'string') t[k] = layer[k];
        });
      });
    });
    api.lang = lang;
    ui.texts = t;
    return t;
  }
  function say(key, extra) {
    var vars = { method: cfg.method, order: ctx.orderId || '', amount: (ctx.view && ctx.view.amount_display) || '' };
    return format(texts()[key], Object.assign(vars, extra || {}));
  }

  function el(tag, className) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    return node;
  }
  function bestAnchor() {
    for (var i = 0; i < ANCHORS.length; i++) {
      var node = document.querySelector(ANCHORS[i][0]);
      if (node && (ANCHORS[i][1] === 'prepend' || node.parentNode)) return { node: node, where: ANCHORS[i][1], rank: i };
    }
    return null;
  }
  function place() {
    var a = bestAnchor();
    if (!a || !ui.panel) return;
    if (a.where === 'before') a.node.parentNode.insertBefore(ui.panel, a.node);
    else if (a.node.firstChild !== ui.panel) a.node.insertBefore(ui.panel, a.node.firstChild);
    ui.rank = a.rank;
  }
  // Themes and checkout-js render late and may re-render: keep the panel in place.
  function watchPlacement() {
    if (ui.observer || typeof MutationObserver !== 'function' || !document.body) return;
    var queued = false;
    ui.observer = new MutationObserver(function () {
      if (queued) return;
      queued = true;
      setTimeout(safe(function () {
        queued = false;
        if (!ui.panel) return;
        if (!ui.panel.isConnected) return place();
        var a = bestAnchor();
        if (a && a.rank < ui.rank && !ui.panel.contains(document.activeElement)) place();
      }), 50);
    });
    ui.observer.observe(document.body, { childList: true, subtree: true });
  }
  function injectStyle() {
    if (document.getElementById('bcpay-okcloud-style')) return;
    var style = el('style');
    style.id = 'bcpay-okcloud-style';
    var withNonce = document.querySelector('style[nonce],script[nonce]'); // strict CSP themes
    if (withNonce && withNonce.nonce) style.nonce = withNonce.nonce;
    style.textContent = CSS;
    (document.head || document.documentElement).appendChild(style);
  }
  function ensurePanel() {
    if (ui.panel) return;
    injectStyle();
    var panel = el('section', 'bcpay-okcloud');
    panel.setAttribute('aria-labelledby', 'bcpay-okcloud-title');
    var live = el('div', 'bcpay-okcloud__status');
    live.setAttribute('role', 'status');
    live.setAttribute('aria-live', 'polite');
    live.setAttribute('aria-atomic', 'true');
    ui.title = el('h2', 'bcpay-okcloud__title');
    ui.title.id = 'bcpay-okcloud-title';
    ui.title.tabIndex = -1;
    ui.body = el('p', 'bcpay-okcloud__body');
    ui.amount = el('p', 'bcpay-okcloud__amount');
    ui.detail = el('p', 'bcpay-okcloud__detail');
    ui.note = el('p', 'bcpay-okcloud__note');
    [ui.title, ui.body, ui.amount, ui.detail, ui.note].forEach(function (n) { live.appendChild(n); });
    ui.actions = el('div', 'bcpay-okcloud__actions');
    panel.appendChild(live);
    panel.appendChild(ui.actions);
    ui.panel = panel;
    place();
    watchPlacement();
  }
  function removePanel() {
    if (ui.observer) ui.observer.disconnect();
    if (ui.panel && ui.panel.parentNode) ui.panel.parentNode.removeChild(ui.panel);
    ui.panel = null;
    ui.observer = null;
    ui.lastKey = '';
  }
  function line(node, text) {
    node.textContent = text || '';
    node.hidden = !text;
  }

  var busy = false;
  function button(text, action, secondary) {
    var b = el('button', 'bcpay-okcloud__button' + (secondary ? ' bcpay-okcloud__button--secondary' : ''));
    b.type = 'button';
    b.textContent = text;
    b.addEventListener('click', safe(function () {
      if (busy) return;
      busy = true;
      b.disabled = true;
      run(action).then(function () { busy = false; b.disabled = false; });
    }));
    return b;
  }

  // spec: {state, tone, title, body, amount, detail, note, spin, buttons: [[text, fn, secondary]], link: [text, href]}
  function render(spec) {
    setState(spec.state);
    ensurePanel();
    var key = JSON.stringify([spec.state, spec.title, spec.body, spec.amount, spec.detail, spec.note,
      (spec.buttons || []).map(function (b) { return b[0]; }), spec.link || null]);
    if (key === ui.lastKey) return; // same content: do not make screen readers repeat it
    ui.lastKey = key;
    var active = document.activeElement;
    var hadFocus = Boolean(active) && ui.panel.contains(active);
    ui.panel.className = 'bcpay-okcloud bcpay-okcloud--' + spec.tone;
    ui.panel.setAttribute('data-state', spec.state);
    ui.title.textContent = '';
    if (spec.spin) {
      var spinner = el('span', 'bcpay-okcloud__spinner');
      spinner.setAttribute('aria-hidden', 'true');
      ui.title.appendChild(spinner);
    }
    ui.title.appendChild(document.createTextNode(spec.title));
    line(ui.body, spec.body);
    line(ui.amount, spec.amount);
    line(ui.detail, spec.detail);
    line(ui.note, spec.note);
    ui.actions.textContent = '';
    (spec.buttons || []).forEach(function (b) { ui.actions.appendChild(button(b[0], b[1], b[2])); });
    if (spec.link) {
      var a = el('a', 'bcpay-okcloud__link');
      a.href = spec.link[1];
      a.textContent = spec.link[0];
      ui.actions.appendChild(a);
    }
    if (hadFocus) (ui.actions.querySelector('button,a') || ui.title).focus(); // focus never lost
  }

  function amountLine(key) {
    var shown = ctx.view && typeof ctx.view.amount_display === 'string' ? ctx.view.amount_display : '';
    return shown ? say(key, { amount: shown }) : '';
  }
  function showLoading() {
    render({ state: 'loading', tone: 'info', title: say('pay_title'), body: say('loading'), spin: true });
  }
  function showPay(target, autoRedirect, checkToken) {
    var buttons = [[say('pay_button'), function () { go(target); }]];
    if (checkToken) buttons.push([say('check_again'), function () { return follow(checkToken, true); }, true]);
    // The shopper may not want to be taken away (or needs longer to read the panel): one press stops it.
    if (autoRedirect) {
      buttons.push([say('stay_here'), function () {
        if (redirectTimer) clearTimeout(redirectTimer);
        redirectTimer = null;
        showPay(target, false, ctx.token);
      }, true]);
    }
    render({
      state: 'pay', tone: 'info', title: say('pay_title'), body: say('pay_body'),
      amount: amountLine('amount_due'), note: autoRedirect ? say('redirecting') : '', buttons: buttons
    });
  }
  function showConfirming() {
    var negative = /fail|cancel|expire|declin|error/.test(ctx.hint);
    render({ state: 'confirming', tone: 'info', title: say('confirming_title'),
      body: say(negative ? 'checking_body' : 'confirming_body'), spin: true });
  }
  function showOutcome(outcome, view) {
    if (outcome === 'received' || outcome === 'review') {
      // Under review the capture did not match the order: the order's amount is not what was paid.
      render({ state: outcome, tone: 'success', title: say('received_title'),
        body: say(outcome === 'review' ? 'review_body' : 'received_body'),
        amount: outcome === 'review' ? '' : amountLine('amount_paid') });
    } else if (outcome === 'refunded') {
      render({ state: 'refunded', tone: 'neutral', title: say('refunded_title'), body: say('refunded_body') });
    } else {
      var why = view && view.state === 'cancelled' ? 'cancelled_body' : view && view.state === 'expired' ? 'expired_body' : 'failed_body';
      var detail = view && typeof view.failure_message === 'string' ? view.failure_message.slice(0, 200) : '';
      render({ state: 'failed', tone: 'error', title: say('failed_title'), body: say(why), detail: detail,
        buttons: [[say('retry_payment'), retryPayment]] });
    }
  }
  function showPending(token) {
    var link = ctx.view ? safeUrl(ctx.view.pay_url) : null;
    render({ state: 'pending', tone: 'info', title: say('pending_title'), body: say('pending_body'),
      buttons: [[say('check_again'), function () { return follow(token, true); }, true]],
      link: link ? [say('pending_link'), link] : null });
  }
  function showUnreachable(again) {
    render({ state: 'unreachable', tone: 'error', title: say('unreachable_title'), body: say('unreachable_body'),
      buttons: [[say('retry'), again]] });
  }
  function showUnavailable(code) {
    render({ state: 'unavailable', tone: 'error', title: say('unavailable_title'), body: say('unavailable_body'),
      buttons: [[say('retry'), retryPayment, true]] });
    api.reason = code || null;
  }

  // ---------------------------------------------------------------- flows
  function go(target) {
    if (redirectTimer) clearTimeout(redirectTimer);
    remember(); // before leaving: coming back without ?bcpay_token still finds it
    setState('redirecting');
    window.location.assign(target);
  }

  // These codes mean "not ours to collect": stay silent, as for another payment method.
  var QUIET = { wrong_payment_method: 1, order_not_awaiting_payment: 1 };

  async function start(userInitiated) {
    var gen = ++flow;
    if (redirectTimer) clearTimeout(redirectTimer);
    showLoading();
    var body = { store_hash: cfg.store, order_id: ctx.orderId, cart_id: ctx.cartId };
    var r = await bcpay('POST', '/api/v1/payments', body);
    for (var tries = 0; r.status === 429 && tries < 2 && gen === flow; tries++) {
      await sleep(r.retryMs || 2000);
      r = await bcpay('POST', '/api/v1/payments', body);
    }
    if (gen !== flow) return;
    if (r.status === 200 && isView(r.data)) return begin(r.data, userInitiated, gen);
    if (r.status === 409 && errorCode(r.data) === 'already_paid') {
      var paid = r.data && isView(r.data.payment) ? r.data.payment : null;
      if (paid) { adopt(paid); remember(); }
      return showOutcome(paid && paid.state === 'under_review' ? 'review' : 'received', paid);
    }
    if (r.status === 0 || r.status === 429 || r.status >= 500) {
      return showUnreachable(function () { return start(true); });
    }
    var code = errorCode(r.data);
    // Quiet on arrival; but after the shopper pressed a button the panel is
    // theirs: say why nothing can be paid (e.g. the order was cancelled when
    // its payment expired) instead of making it vanish.
    if (hasOwn(QUIET, code) && !userInitiated) { removePanel(); return setState('declined', code); }
    showUnavailable(code || 'http_' + r.status);
  }

  function begin(view, userInitiated, gen) {
    adopt(view);
    var outcome = outcomeOf(view);
    if (outcome) {
      if (outcome !== 'failed') remember();
      return showOutcome(outcome, view);
    }
    var cashier = safeUrl(view.cashier_url);
    var target = cashier || safeUrl(view.pay_url);
    if (!target) return showUnavailable('no_payment_url');
    // Back from the cashier, or a reload, brings the shopper here on purpose: going to the cashier
    // again by itself would make Back a trap (it would, without sessionStorage, on every Back).
    var auto = Boolean(cashier) && (userInitiated || !revisited());
    showPay(target, auto, auto ? null : view.token);
    if (auto) {
      redirectTimer = setTimeout(safe(function () {
        if (gen === flow && api.state === 'pay') go(cashier);
      }), userInitiated ? 0 : cfg.redirectMs);
    }
  }

  async function retryPayment() {
    if (!ctx.cartId && ctx.orderId) {
      showLoading();
      var order = await readOrder(ctx.orderId);
      if (order && order.cartId) ctx.cartId = String(order.cartId);
    }
    if (!ctx.orderId || !ctx.cartId) return showUnavailable('order_unknown');
    return start(true);
  }

  // A token from the URL that belongs to another order than the one this page shows (a link
  // passed around) is treated as unknown: the page's own order decides.
  function otherOrder(view) {
    var id = positiveInt(view.order_id), page = cfg.orderId || ctx.pageOrderId;
    return Boolean(page && id && id !== page);
  }
  // Back, forward or reload: the shopper came to this page on purpose, not from the cashier's return.
  function revisited() {
    try {
      var nav = performance.getEntriesByType('navigation')[0];
      return Boolean(nav) && (nav.type === 'back_forward' || nav.type === 'reload');
    } catch (e) { return false; }
  }

  // Poll with backoff. "awaiting_payment" only ever means "still confirming": a slow
  // notification must never look like a failure. Resolves 'unknown' if bcpay does not
  // know the token (the caller then falls back to the order). ``returned``: the shopper comes
  // back from the cashier; else (Back, reload) an unpaid payment offers Pay now and Check
  // again rather than two minutes of "confirming" with nothing to press.
  async function follow(token, returned) {
    var gen = ++flow;
    if (redirectTimer) clearTimeout(redirectTimer);
    ctx.token = token;
    api.token = token;
    if (returned) showConfirming(); else showLoading();
    var started = now(), delay = cfg.pollMs, failures = 0, answered = false;
    for (;;) {
      var r = await bcpay('GET', '/api/v1/payments/' + encodeURIComponent(token));
      if (gen !== flow) return 'done';
      if (r.status === 200 && isView(r.data) && (!r.data.store_hash || r.data.store_hash === cfg.store) &&
          !otherOrder(r.data)) {
        answered = true;
        failures = 0;
        adopt(r.data);
        remember();
        var outcome = outcomeOf(r.data);
        if (outcome) {
          showOutcome(outcome, r.data);
          return 'done';
        }
        if (!returned) {
          var resume = safeUrl(r.data.cashier_url) || safeUrl(r.data.pay_url);
          if (resume) { showPay(resume, false, token); return 'done'; }
        }
        showConfirming();
      } else if (r.status === 0 || r.status >= 500) {
        failures++;
        if (!answered && failures >= 3) {
          showUnreachable(function () { return follow(token, returned); });
          return 'done';
        }
      } else if (r.status === 429) {
        delay = Math.max(delay, r.retryMs || cfg.pollMaxMs);
      } else if (!answered) {
        forget(ctx.orderId);
        removePanel();
        return 'unknown';
      }
      if (now() - started >= cfg.pollTotalMs) {
        if (answered) showPending(token);
        else showUnreachable(function () { return follow(token, returned); });
        return 'done';
      }
      await sleep(delay);
      if (gen !== flow) return 'done';
      delay = Math.min(Math.round(delay * 1.5), cfg.pollMaxMs);
    }
  }

  async function main() {
    cfg = readConfig();
    if (!cfg.base || !cfg.store) return setState('misconfigured');
    var back = readReturn();
    var urlToken = back.token;
    ctx.hint = back.hint;
    // Which order this page shows, before a token from the URL is believed: a link passed around,
    // or a return hop landing on the session's newest order, may carry another order's token.
    // A returning shopper is not kept waiting long on a page that names no order.
    var id = await findOrderId(urlToken ? Math.min(cfg.orderWaitMs, 3000) : cfg.orderWaitMs);
    ctx.pageOrderId = id;
    if (urlToken && (await follow(urlToken, true)) !== 'unknown') return;
    if (!id && urlToken) id = await findOrderId();
    if (!id) return setState('no_order');
    ctx.orderId = id;
    var stored = recall(id);
    if (stored && stored.t !== urlToken) {
      ctx.cartId = stored.c;
      if ((await follow(stored.t, !revisited())) !== 'unknown') return;
    }
    setState('reading_order');
    var order = await readOrder(id);
    if (!order) return setState('no_order', 'order_unreadable');
    if (!paidWith(order, cfg.method)) return setState('skipped', 'other_method');
    if (norm(order.status) !== 'awaiting_payment') return setState('skipped', 'not_awaiting_payment');
    ctx.cartId = order.cartId == null ? '' : String(order.cartId);
    await start(false);
  }

  // Back button from the cashier restores this page from the bfcache: show the status.
  function onPageShow(event) {
    if (event.persisted && api.state === 'redirecting' && ctx.token) {
      var token = ctx.token;
      run(function () { return follow(token, false); });
    }
  }

  try {
    window.addEventListener('pageshow', safe(onPageShow));
    if (document.readyState === 'loading') {
      document.addEventListener('DOMContentLoaded', function () { run(main); }, { once: true });
    } else {
      run(main);
    }
  } catch (e) { report(e); }
})();

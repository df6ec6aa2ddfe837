/* Sandbox stand-in for checkout-js on the order-confirmation page: after a
 * short delay it reads the order from the Storefront Orders API, as BigCommerce's
 * checkout does, and renders the summary. */
(function () {
  "use strict";
  var config = window.checkoutConfig || {};
  var sandbox = window.sandboxStorefront || { variant: "fetch", delayMs: 0 };
  var url = "/api/storefront/orders/" + encodeURIComponent(config.orderId) +
    "?include=lineItems,payments,billingAddress";
  var accept = "application/vnd.bc.v1+json";

  function el(tag, text, className) {
    var node = document.createElement(tag);
    if (text !== undefined) { node.textContent = text; }
    if (className) { node.className = className; }
    return node;
  }

  function money(order, amount) {
    return order.currency.symbol + Number(amount).toFixed(order.currency.decimalPlaces) +
      " " + order.currency.code;
  }

  function render(order) {
    var box = document.getElementById("order-summary");
    box.textContent = "";
    var email = order.billingAddress ? order.billingAddress.email : "";
    box.appendChild(el("p", "A confirmation has been sent to " + email + "."));
    var table = el("table");
    table.id = "order-lines";
    var items = (order.lineItems && order.lineItems.physicalItems) || [];
    items.forEach(function (item) {
      var row = el("tr");
      row.appendChild(el("td", item.quantity + " \u00d7 " + item.name));
      row.appendChild(el("td", money(order, item.extendedSalePrice), "num"));
      table.appendChild(row);
    });
    var total = el("tr");
    total.appendChild(el("th", "Total"));
    var amount = el("td", money(order, order.orderAmount), "num");
    amount.id = "order-total";
    total.appendChild(amount);
    table.appendChild(total);
    box.appendChild(table);
    (order.payments || []).forEach(function (payment) {
      var p = el("p", "Payment method: " + payment.description);
      p.className = "payment-method";
      box.appendChild(p);
      if (payment.detail && payment.detail.instructions) {
        box.appendChild(el("p", payment.detail.instructions, "muted payment-instructions"));
      }
    });
    var status = el("p", "Status: " + order.status, "muted");
    status.id = "order-status";
    box.appendChild(status);
    document.documentElement.setAttribute("data-order-loaded", String(order.orderId));
  }

  function fail(status) {
    var box = document.getElementById("order-summary");
    box.textContent = "";
    box.appendChild(el("p", "We could not load your order (" + status + ").", "error"));
  }

  function viaXhr() {
    var xhr = new XMLHttpRequest();
    xhr.open("GET", url);
    xhr.setRequestHeader("Accept", accept);
    xhr.withCredentials = true;
    xhr.onload = function () {
      if (xhr.status === 200) { render(JSON.parse(xhr.responseText)); } else { fail(xhr.status); }
    };
    xhr.onerror = function () { fail("network error"); };
    xhr.send();
  }

  function viaFetch() {
    fetch(url, { credentials: "include", headers: { Accept: accept } })
      .then(function (response) {
        return response.ok ? response.json() : Promise.reject(response.status);
      })
      .then(render, fail);
  }

  window.setTimeout(sandbox.variant === "xhr" ? viaXhr : viaFetch, sandbox.delayMs);
})();

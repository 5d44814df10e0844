"""Legality of an order and the accounting of its fill: the part of
:class:`ppo_approach.trading_env.TradingEnv` where cash, units, fees, trade count and entry price
change (fills at ``open * (1 + slippage)`` for buys, ``open * (1 - slippage)`` for sells, fee
``transaction_cost * |traded notional|`` taken from cash; see ``docs/actions.md``)."""

from __future__ import annotations

from ppo_approach.env_actions import ORDER_FRACTION


class FillAccounting:
    """Mixin of :class:`ppo_approach.trading_env.TradingEnv`: which action is valid in the current
    state, and how a valid one becomes one fill. The env sets every attribute below."""

    _capital: float
    _tc: float
    _buy_mult: float
    _sell_mult: float
    _short: bool
    _min_trade: float
    _close: list[float]
    _t: int
    _cash: float
    _units: float
    _entry: float
    _held: int
    _trades: int
    _total_fees: float

    def _is_valid(self, action: int) -> bool:
        """Whether ``action`` changes the portfolio in the current state (docs/actions.md)."""
        if action == 0:  # HOLD
            return True
        units = self._units
        if action <= 3:  # BUY_x: spend x of cash (flat/long) or cover x of a short
            return units < 0.0 or self._cash > self._min_trade
        if action <= 6:  # SELL_x: sell x of a long, or open/extend a short (allow_short)
            if units > 0.0:
                return True
            if not self._short:
                return False
            return self._short_capacity(self._close[self._t]) > self._min_trade
        if action == 7:  # CLOSE
            return units != 0.0
        # REVERSE: long -> short needs allow_short; short -> long always (shorts need it anyway)
        return units < 0.0 or (units > 0.0 and self._short)

    def _short_capacity(self, price: float) -> float:
        """Notional that may still be sold short at ``price``: equity minus the short's notional.

        Caps short exposure at 1x equity, the mirror of the long side, where BUY can spend at
        most the cash. Flat: capacity = equity = cash.
        """
        units = self._units
        equity = self._cash + units * price
        short_notional = -units * price if units < 0.0 else 0.0
        return equity - short_notional

    def _execute(self, action: int, open_price: float) -> float:
        """Turn a valid non-HOLD action into one fill at ``open_price``; returns the fee paid."""
        units = self._units
        if action <= 3:  # BUY_x
            frac = ORDER_FRACTION[action]
            if units < 0.0:
                return self._trade(-units * frac, open_price)
            buy_price = open_price * self._buy_mult
            # Spend frac * cash in total, fee included, so cash never goes negative.
            return self._trade(frac * self._cash / (buy_price * (1.0 + self._tc)), open_price)
        if action <= 6:  # SELL_x
            frac = ORDER_FRACTION[action]
            if units > 0.0:
                return self._trade(-units * frac if frac < 1.0 else -units, open_price)
            capacity = self._short_capacity(open_price)
            if capacity <= 0.0:  # price gapped against the short since the decision
                return 0.0
            return self._trade(-frac * capacity / (open_price * self._sell_mult), open_price)
        if action == 7:  # CLOSE
            return self._trade(-units, open_price)
        # REVERSE, as one fill of twice the position
        if units > 0.0:
            return self._trade(-2.0 * units, open_price)
        buy_price = open_price * self._buy_mult
        cash_after_cover = self._cash + units * buy_price * (1.0 + self._tc)
        long_units = min(-units, max(0.0, cash_after_cover / (buy_price * (1.0 + self._tc))))
        return self._trade(long_units - units, open_price)

    def _trade(self, delta_units: float, open_price: float) -> float:
        """Fill ``delta_units`` (> 0 buy, < 0 sell) at ``open_price`` with slippage; pay the fee.

        The ONE place where cash, units, fees, trade count and entry price change.
        """
        if delta_units == 0.0:
            return 0.0
        fill = open_price * (self._buy_mult if delta_units > 0.0 else self._sell_mult)
        notional = delta_units * fill  # signed
        fee = self._tc * (notional if notional > 0.0 else -notional)
        old = self._units
        new = old + delta_units
        if -1e-12 * abs(old) < new < 1e-12 * abs(old):
            new = 0.0  # closing a position leaves no float dust
        cash = self._cash - (notional + fee)
        if -1e-9 * self._capital < cash < 0.0:
            cash = 0.0  # spending all cash can round to -1e-13; keep cash_frac >= 0
        self._cash = cash
        self._units = new
        self._total_fees += fee
        self._trades += 1
        if new == 0.0:
            self._entry = 0.0
            self._held = 0
        elif old == 0.0 or (old > 0.0) != (new > 0.0):  # opened or flipped
            self._entry = fill
            self._held = 0
        elif abs(new) > abs(old):  # added to the position: volume-weighted entry
            self._entry = (abs(old) * self._entry + abs(delta_units) * fill) / abs(new)
        return fee

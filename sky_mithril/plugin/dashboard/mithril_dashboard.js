// Mithril in SkyPilot's dashboard, loaded through the plugin's
// js_extension_path: an Infra row per region the project can use (or one
// row saying why Mithril is not enabled), and a "Mithril" page with the
// market (7-day price charts with the user's and the suggested limit), the
// project's bids, its worst-case spend, volumes and reservations.
// Plain JS on the dashboard's shared window.React; charts are inline SVG.
// Everything is read from the plugin's own routes on the same origin.
(function () {
  'use strict';

  var SCRIPT_SRC = document.currentScript ? document.currentScript.src : '';
  var API = SCRIPT_SRC ? SCRIPT_SRC.replace(/\/dashboard\.js(\?.*)?$/, '')
                       : '/plugins/api/mithril';
  var PAGE_PATH = '/plugins/mithril';
  var ROW_PREFIX = 'mithril';

  function getJSON(path) {
    return fetch(API + path, {credentials: 'same-origin'}).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) {
          throw new Error((body && body.error) || ('HTTP ' + r.status));
        }
        return body;
      });
    });
  }

  function money(value) {
    return value === null || value === undefined ? '-' : '$' + value.toFixed(2);
  }

  function perHour(value) {
    return value === null || value === undefined ? '-' : money(value) + '/h';
  }

  function register(api) {
    var React = window.React;
    var h = React.createElement;

    // The Infra page's data, shared by the rows' hook and the slot
    // components (which get only the row's id).
    var infra = {data: null, loading: false, listeners: []};

    function notify() {
      infra.listeners.forEach(function (listener) { listener(infra.data); });
    }

    function loadInfra() {
      infra.loading = true;
      return getJSON('/infra').then(function (data) {
        infra.data = data;
      }, function (err) {
        infra.data = {enabled: false, reason: String(err.message || err),
                      regions: []};
      }).then(function () {
        infra.loading = false;
        notify();
      });
    }

    function useInfra() {
      var state = React.useState(infra.data);
      var setData = state[1];
      React.useEffect(function () {
        infra.listeners.push(setData);
        return function () {
          infra.listeners = infra.listeners.filter(function (l) {
            return l !== setData;
          });
        };
      }, [setData]);
      return state[0];
    }

    function infraRows(data) {
      if (!data) return [];
      if (!data.enabled) {
        return [{kind: 'cloud', id: ROW_PREFIX, name: 'Mithril (not enabled)'}];
      }
      return data.regions.map(function (region) {
        return {kind: 'cloud', id: ROW_PREFIX + '/' + region.region,
                name: 'Mithril ' + region.region};
      });
    }

    function useExtraInfraRows() {
      var data = useInfra();
      React.useEffect(function () {
        if (!infra.data && !infra.loading) loadInfra();
      }, []);
      return React.useMemo(function () {
        var statusByKey = new Map();
        if (data) {
          (data.regions || []).forEach(function (region) {
            statusByKey.set('cloud:' + ROW_PREFIX + '/' + region.region,
                            region);
          });
        }
        return {
          rows: infraRows(data),
          statusByKey: statusByKey,
          loading: !data,
          refresh: loadInfra,
        };
      }, [data]);
    }

    function regionOf(id) {
      var data = infra.data;
      if (!data || !id || id.indexOf(ROW_PREFIX) !== 0) return null;
      var name = id.slice(ROW_PREFIX.length + 1);
      return (data.regions || []).filter(function (r) {
        return r.region === name;
      })[0] || null;
    }

    // The row's right-hand cell: what the region holds, or why Mithril is
    // not enabled (`sky check`'s reason).
    function RowDetail(props) {
      var data = useInfra();
      if (!props.id || props.id.indexOf(ROW_PREFIX) !== 0 || !data) return null;
      if (!data.enabled) {
        return h('span', {'data-mithril': 'infra-reason',
                          className: 'text-xs text-red-600'},
                 'sky check: ' + data.reason);
      }
      var region = regionOf(props.id);
      if (!region) return null;
      var types = region.instance_types.length;
      return h('span', {'data-mithril': 'infra-detail',
                        className: 'text-xs text-gray-600',
                        style: {whiteSpace: 'nowrap'},
                        title: region.instance_types.join(', ')},
               types + ' instance type' + (types === 1 ? '' : 's') + ' · ' +
               region.bids + ' live bid' + (region.bids === 1 ? '' : 's') +
               ' · ' + region.nodes + ' node' + (region.nodes === 1 ? '' : 's'));
    }

    api.registerDataProvider({
      id: 'mithril',
      name: 'Mithril',
      hooks: {useExtraInfraRows: useExtraInfraRows},
    });
    api.registerComponent({id: 'mithril-infra-detail', slot: 'infra.row.actions',
                           component: RowDetail});

    // The Mithril page.

    var CHART_W = 320;
    var CHART_H = 90;
    var LEGEND_H = 14;

    function PriceChart(props) {
      var m = props.market;
      var points = m.history.map(function (s) {
        return [Date.parse(s[0]), s[1]];
      });
      if (points.length === 0) {
        return h('span', {className: 'text-xs text-gray-500'},
                 'no price history in 7 days');
      }
      // The scale fits the history and the suggested limit; a limit far
      // above them is drawn at the top edge, and the legend says so.
      var prices = points.map(function (p) { return p[1]; });
      if (m.suggested_limit !== null) prices.push(m.suggested_limit);
      if (m.your_limit !== null &&
          m.your_limit <= 1.5 * Math.max.apply(null, prices)) {
        prices.push(m.your_limit);
      }
      var low = Math.min.apply(null, prices);
      var high = Math.max.apply(null, prices);
      if (high === low) { high += 1; low = Math.max(0, low - 1); }
      var t0 = Date.now() - 7 * 86400e3;
      var t1 = Date.now();
      var pad = 4;
      function x(t) {
        return pad + (Math.max(t, t0) - t0) / (t1 - t0) * (CHART_W - 2 * pad);
      }
      function y(v) {
        return Math.max(pad, CHART_H - pad -
                        (v - low) / (high - low) * (CHART_H - 2 * pad));
      }
      // A step line: the price holds until the next sample.
      var path = points.map(function (p, i) {
        var step = i === 0 ? 'M' + x(p[0]) + ',' + y(p[1])
                           : 'H' + x(p[0]) + 'V' + y(p[1]);
        return step;
      }).join('') + 'H' + x(t1);
      function level(value, color) {
        if (value === null || value === undefined) return null;
        return h('line', {x1: pad, x2: CHART_W - pad, y1: y(value), y2: y(value),
                          stroke: color, strokeDasharray: '4 3',
                          strokeWidth: 1.2});
      }
      // The legend, under the plot: the two limits by colour.
      function legend(value, color, label, x0) {
        if (value === null || value === undefined) return null;
        return h('text', {x: x0, y: CHART_H + 11, fill: color, fontSize: 10},
                 '- - ' + label + ' ' + money(value) +
                   (value > high ? ' ↑ off the chart' : ''));
      }
      return h('svg', {width: CHART_W, height: CHART_H + LEGEND_H,
                       viewBox: '0 0 ' + CHART_W + ' ' + (CHART_H + LEGEND_H),
                       'data-mithril': 'price-chart', role: 'img',
                       'aria-label': '7-day spot price of ' + m.instance_type +
                         ' in ' + m.region},
               h('rect', {width: CHART_W, height: CHART_H, rx: 4,
                          fill: '#f9fafb'}),
               h('path', {d: path, fill: 'none', stroke: '#2563eb',
                          strokeWidth: 1.5}),
               level(m.your_limit, '#dc2626'),
               level(m.suggested_limit, '#16a34a'),
               legend(m.your_limit, '#dc2626', 'your limit', pad),
               legend(m.suggested_limit, '#16a34a', 'suggested', CHART_W * 0.6));
    }

    function Section(props) {
      return h('div', {className: 'rounded-lg border bg-card shadow-sm mb-6',
                       'data-mithril': props.name},
               h('div', {className: 'p-5'},
                 h('h3', {className: 'text-lg font-semibold mb-3'}, props.title),
                 props.children));
    }

    function Table(props) {
      return h('div', {className: 'overflow-x-auto rounded-md border'},
               h('table', {className: 'min-w-full text-sm'},
                 h('thead', {className: 'bg-gray-50'},
                   h('tr', null, props.head.map(function (cell) {
                     return h('th', {key: cell,
                                     className: 'p-2 text-left font-medium text-gray-600'},
                              cell);
                   }))),
                 h('tbody', {className: 'divide-y divide-gray-200'},
                   props.rows.length ? props.rows.map(function (row, i) {
                     return h('tr', {key: i, 'data-mithril': props.rowName},
                              row.map(function (cell, j) {
                                return h('td', {key: j, className: 'p-2 align-top'},
                                         cell);
                              }));
                   }) : h('tr', null, h('td', {colSpan: props.head.length,
                                               className: 'p-2 text-gray-500'},
                                        props.empty)))));
    }

    function SpendSection(props) {
      var s = props.spend;
      var budget = s.max_hourly_spend;
      var share = budget ? Math.min(1, s.worst_case_per_hour / budget) : 0;
      return h(Section, {name: 'spend', title: 'Worst-case spend'},
        h('p', {className: 'text-sm mb-2', 'data-mithril': 'spend-line'},
          'Worst case now: ' + perHour(s.worst_case_per_hour) + ' over ' +
          s.billable_bids + ' billable bid' + (s.billable_bids === 1 ? '' : 's') +
          (budget ? ' of your max_hourly_spend ' + perHour(budget) +
                    ' (' + s.max_hourly_spend_source + ')'
                  : '; no max_hourly_spend is set')),
        budget ? h('svg', {width: 320, height: 12},
                   h('rect', {width: 320, height: 12, fill: '#e5e7eb', rx: 3}),
                   h('rect', {width: 320 * share, height: 12, rx: 3,
                              fill: share >= 1 ? '#dc2626' : '#2563eb'}))
               : null);
    }

    function MarketSection(props) {
      return h(Section, {name: 'market', title: 'Spot market (7 days)'},
        h(Table, {
          head: ['Instance type', 'Region', 'Spot now', 'Free', 'Your limit',
                 'Suggested (90%)', 'Price, 7 days'],
          rowName: 'market-row',
          empty: 'No auctions.',
          rows: props.market.map(function (m) {
            return [m.instance_type + (m.gpus ? ' (' + m.gpus + 'x ' +
                                       m.accelerator + ')' : ''),
                    m.region, perHour(m.spot_price), String(m.free_capacity),
                    h('span', {title: m.your_limit_source}, perHour(m.your_limit)),
                    perHour(m.suggested_limit), h(PriceChart, {market: m})];
          }),
        }));
    }

    function BidsSection(props) {
      return h(Section, {name: 'bids', title: "The project's bids"},
        h(Table, {
          head: ['Cluster', 'Bid', 'Type', 'Region', 'Status', 'Reason',
                 'Limit', 'Clearing now'],
          rowName: 'bid-row',
          empty: 'No live bids.',
          rows: props.bids.map(function (b) {
            return [b.cluster || h('span', {className: 'text-gray-500'},
                                   'not SkyPilot'),
                    h('span', {title: b.fid}, b.name),
                    b.instance_type + (b.instances > 1 ? ' ×' + b.instances : ''),
                    b.region || '-',
                    (b.status || 'gone') + ' (' + b.bid_status + ')',
                    h('span', {className: 'text-xs'}, b.reason || ''),
                    perHour(b.limit_price), perHour(b.clearing_price)];
          }),
        }));
    }

    function VolumesSection(props) {
      return h(Section, {name: 'volumes', title: 'Volumes'},
        h(Table, {
          head: ['Name', 'Region', 'Interface', 'Size', 'Used by'],
          rowName: 'volume-row',
          empty: 'No volumes.',
          rows: props.volumes.map(function (v) {
            return [v.name, v.region, v.interface, v.capacity_gb + ' GB',
                    v.used_by.join(', ') || '-'];
          }),
        }));
    }

    function ReservationsSection(props) {
      return h(Section, {name: 'reservations', title: 'Reservations'},
        h(Table, {
          head: ['Name', 'Status', 'Type', 'Region', 'Window', 'In use',
                 'Paused', 'Credits'],
          rowName: 'reservation-row',
          empty: 'No reservations.',
          rows: props.reservations.map(function (r) {
            var c = r.credits;
            return [r.name, r.status, r.instance_type, r.region || '-',
                    r.start_time.slice(0, 16).replace('T', ' ') + ' → ' +
                      r.end_time.slice(0, 16).replace('T', ' ') + ' UTC',
                    r.in_use + ' of ' + r.instance_quantity, String(r.paused),
                    c ? 'pause ' + money(c.pause_credit) + ', return ' +
                        money(c.return_credit) + ' (net ' + money(c.net_cost) + ')'
                      : '-'];
          }),
        }));
    }

    var SECTIONS = ['spend', 'market', 'bids', 'volumes', 'reservations'];

    function MithrilPage() {
      var state = React.useState({});
      var data = state[0];
      var setData = state[1];
      var load = React.useCallback(function () {
        SECTIONS.forEach(function (name) {
          getJSON('/' + name).then(function (body) {
            setData(function (old) {
              var next = Object.assign({}, old);
              next[name] = {body: body};
              return next;
            });
          }, function (err) {
            setData(function (old) {
              var next = Object.assign({}, old);
              next[name] = {error: String(err.message || err)};
              return next;
            });
          });
        });
      }, []);
      React.useEffect(load, [load]);
      function part(name, render) {
        var got = data[name];
        if (!got) {
          return h('p', {key: name, className: 'text-sm text-gray-500 mb-4'},
                   'Loading ' + name + '…');
        }
        if (got.error) {
          return h('p', {key: name, className: 'text-sm text-red-600 mb-4',
                         'data-mithril': 'error'},
                   name + ': ' + got.error);
        }
        return h(React.Fragment, {key: name}, render(got.body));
      }
      return h('div', {id: 'mithril-page'},
        h('div', {className: 'flex items-center justify-between mb-4'},
          h('h2', {className: 'text-base'}, 'Mithril'),
          h('button', {onClick: load, className: 'text-sky-blue text-sm'},
            'Refresh')),
        part('spend', function (b) { return h(SpendSection, {spend: b}); }),
        part('market', function (b) {
          return h(MarketSection, {market: b.market});
        }),
        part('bids', function (b) { return h(BidsSection, {bids: b.bids}); }),
        part('volumes', function (b) {
          return h(VolumesSection, {volumes: b.volumes});
        }),
        part('reservations', function (b) {
          return h(ReservationsSection, {reservations: b.reservations});
        }));
    }

    api.registerRoute({
      id: 'mithril',
      path: PAGE_PATH,
      title: 'Mithril',
      mount: function (ctx) {
        var root = window.ReactDOM.createRoot(ctx.container);
        root.render(h(MithrilPage));
        return function () { root.unmount(); };
      },
    });
    api.registerTopNavLink({id: 'mithril', label: 'Mithril', href: PAGE_PATH,
                            order: 100});
  }

  if (window.SkyDashboardPluginAPI) {
    register(window.SkyDashboardPluginAPI);
  } else {
    window.addEventListener('skydashboard:plugins-ready', function (event) {
      register(event.detail);
    }, {once: true});
  }
})();
